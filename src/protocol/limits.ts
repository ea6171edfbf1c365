/**
 * Limits the demo page checks before sending, shared with the schemas so that the two
 * cannot drift. A module without zod: the page's bundle imports it.
 */

/** The most Unicode code points a message `body` may have (an emoji counts 1). */
export const BODY_MAX_CHARS = 4000;

/** Code points in `s` (`String.length` counts UTF-16 units: an emoji is 2). */
export function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}
