"""The artifact store: trial dirs, kept checkpoints and exports, archives, trial logs, on
local disk or in an object store, and the uploads that put a trial's keepers there."""
