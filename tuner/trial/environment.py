"""A trial's environment is built, not inherited: trainers never see the service's secrets.

A trainer is user code. The process that starts it (a worker, `tuner serve`, a Ray task) holds
the database URL with its password, the object store's credentials and the cloud's; none of them
is the trainer's. A trial therefore starts from the machine's ordinary variables only (the
search path, the locale, the home and temp dirs, the proxy and CA settings, the library and
device settings that TensorFlow, CUDA and the BLAS libraries read), then gets, in this order:

1. the variables its registry entry passes on purpose by name (`passEnv`), read from the
   starting process's environment (a trainer that reads its data from the bucket);
2. its registry entry's own `env`;
3. what AI Platform and Vertex tell a trial (`TF_CONFIG`, `CLOUD_ML_*`, `AIP_*`), its thread
   counts and its devices (`tuner.trial.execution`, `tuner.trial.resources`).

Never passed by default: `TUNER_*`, database URLs, object-store and cloud credentials
(`AWS_*`, `GOOGLE_*`, `AZURE_*`, ...), Ray's own variables, anything else not listed below.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tuner.domain.trainers import SERVICE_PREFIX

__all__ = [
    "ORDINARY_NAMES",
    "ORDINARY_PREFIXES",
    "SERVICE_PREFIX",
    "ordinary_environment",
    "passed_environment",
]

#: Variables of any machine that a program expects to find, and that hold no credential.
ORDINARY_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "TERM",
        "HOSTNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "LD_PRELOAD",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    }
)

#: Families of ordinary variables: the locale, Python's own, TensorFlow's and XLA's settings
#: (not `TF_CONFIG`: each trial gets its own), the devices, the math libraries' threads.
ORDINARY_PREFIXES = (
    "LC_",
    "PYTHON",
    "TF_",
    "XLA_",
    "CUDA_",
    "NVIDIA_",
    "NCCL_",
    "OMP_",
    "MKL_",
    "KMP_",
    "OPENBLAS_",
    "NUMEXPR_",
)


def _is_ordinary(name: str) -> bool:
    if name.startswith(SERVICE_PREFIX) or name == "TF_CONFIG":
        return False
    return name in ORDINARY_NAMES or name.startswith(ORDINARY_PREFIXES)


def ordinary_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The ordinary variables of `environ`: what every trial starts from."""
    return {name: value for name, value in environ.items() if _is_ordinary(name)}


def passed_environment(names: Iterable[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The variables a registry entry passes on purpose (`passEnv`), those that are set."""
    return {
        name: environ[name]
        for name in names
        if name in environ and not name.startswith(SERVICE_PREFIX)
    }
