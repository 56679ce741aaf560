/** Where the gateway is: its own URL for the server, a same-origin prefix for the browser. */

/** The browser's way to the gateway (proxy.ts forwards it). */
export const GATEWAY_PREFIX = "/gateway";

/** The gateway's URL, read when a request needs it (not at build time), so one build serves
 * any gateway. */
export function gatewayUrl(): string {
  return (process.env.GATEWAY_URL ?? "http://127.0.0.1:8000").replace(/\/$/, "");
}
