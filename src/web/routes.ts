import page from "./index.html";

/**
 * HTTP routes of the demo page: `GET /` is the chat page, an HTML import that Bun
 * bundles (the page's TypeScript and CSS, the SDK and the protocol schemas) and that
 * `bun build --compile` embeds in the binary.
 */
export function pageRoutes(): Record<string, unknown> {
  return { "/": page };
}
