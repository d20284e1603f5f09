// Starts the first screen's requests while the modules load: a classic script in <head>, so
// they leave one round trip (and the module graph) earlier. api.js takes each answer once.
(() => {
  const root = document.querySelector('meta[name="tuner-root"]')?.content || "";
  const token = localStorage.getItem("estimator-tuner.token") || "";
  const api = `${root}/api/v1`;
  const early = (window.tunerEarly = {});
  const start = (path) => {
    const url = api + path;
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const response = fetch(url, { headers, cache: "no-store" });
    response.catch(() => {});
    early[url] = { token, response };
  };
  start("/whoami");
  const study = /^#\/studies\/([^/]+)\/?$/.exec(location.hash);
  if (study) {
    const path = `/studies/${encodeURIComponent(decodeURIComponent(study[1]))}`;
    start(path);
    start(`${path}/trials?sort=objective&limit=50&offset=0`);
  } else if (!location.hash || location.hash === "#/") {
    start("/studies?limit=50&offset=0");
  }
})();
