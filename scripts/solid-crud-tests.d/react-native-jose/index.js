// Stand-in for react-native-jose (a git-only dependency of isomorphic-webcrypto
// that is loaded only on React Native). Anything that reaches it under Node is a
// bug in our setup, so say so loudly.
"use strict";
function unavailable() {
  throw new Error("react-native-jose is stubbed out in xpod's solid-crud-tests runner");
}
module.exports = new Proxy({}, { get: (_t, key) => (key === "__esModule" ? false : unavailable) });
