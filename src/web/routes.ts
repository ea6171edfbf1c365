/** HTTP routes of the demo page (filled in by the web feature). */
export function pageRoutes(): Record<string, unknown> {
  return {};
}
