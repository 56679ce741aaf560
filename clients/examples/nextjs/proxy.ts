/** The gateway behind this app's own origin: `/gateway/api/*` is rewritten to
 * `${GATEWAY_URL}/api/*`, so the browser never makes a cross-origin request and the gateway
 * needs no CORS entry. This app's own route handlers stay under `/api`, off that prefix. */

import { NextResponse, type NextRequest } from "next/server";

import { GATEWAY_PREFIX, gatewayUrl } from "@/app/lib/gateway-url";

export function proxy(request: NextRequest): NextResponse {
  const path = request.nextUrl.pathname.slice(GATEWAY_PREFIX.length);
  return NextResponse.rewrite(new URL(`${path}${request.nextUrl.search}`, gatewayUrl()));
}

export const config = { matcher: "/gateway/api/:path*" };
