/**
 * The page's Content-Security-Policy forbids eval. zod tries `new Function` once, when
 * its first object schema is built, to see whether it may compile its checks; each try
 * is a CSP violation in the console. Imported before anything that builds a schema.
 */
import { z } from "zod";

z.config({ jitless: true });
