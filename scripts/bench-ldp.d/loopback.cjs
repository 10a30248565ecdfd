// Loaded into Community Solid Server with `node --require`. CSS 7.2 has no
// bind-address option and listens on all interfaces; the benchmark must stay
// on loopback, so a listen() given only a port is redirected to 127.0.0.1.
"use strict";
const net = require("node:net");
const originalListen = net.Server.prototype.listen;
net.Server.prototype.listen = function listenOnLoopback(...args) {
  const [first] = args;
  const portOnly = typeof first === "number" || (typeof first === "string" && /^[0-9]+$/.test(first));
  if (portOnly && typeof args[1] !== "string") {
    args.splice(1, 0, "127.0.0.1");
  } else if (first && typeof first === "object" && "port" in first && !first.host && !first.path) {
    args[0] = Object.assign({}, first, { host: "127.0.0.1" });
  }
  return originalListen.apply(this, args);
};
