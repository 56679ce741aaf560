import type { NextConfig } from "next";

// The gateway is reached through proxy.ts (a rewrite read at request time), not through
// `rewrites()` here: those are fixed when `next build` runs, so one build could never be pointed
// at another gateway with GATEWAY_URL.
const config: NextConfig = {
  // Compressing a proxied text/event-stream holds its events back until a buffer fills.
  compress: false,
};

export default config;
