// Preloaded into NNI's manager (node --require, through NODE_OPTIONS) by recstudio_edge.tune.
// NNI 3.0 has no bind-address option: its REST server and web UI call app.listen(port), which
// listens on every interface. When RECSTUDIO_EDGE_NNI_HOST is set, a listen(port) that names no
// host is given that host (e.g. 127.0.0.1), so the web UI is reachable from this machine only.
'use strict';
const net = require('net');

const host = process.env.RECSTUDIO_EDGE_NNI_HOST;
if (host) {
  const listen = net.Server.prototype.listen;
  net.Server.prototype.listen = function (...args) {
    const first = args[0];
    if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
      if (args.length === 1 || typeof args[1] === 'function') {
        args.splice(1, 0, host);
      } else if (args[1] === undefined || args[1] === null) {
        args[1] = host;
      }
    } else if (first && typeof first === 'object' && !(first instanceof net.Server)
               && first.port !== undefined && !first.host && !first.path) {
      args[0] = Object.assign({}, first, { host });
    }
    return listen.apply(this, args);
  };
}
