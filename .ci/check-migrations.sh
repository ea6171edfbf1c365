#!/usr/bin/env bash
# Fails when src/db/schema.ts and migrations/ disagree (drizzle-kit would generate a new
# migration) or when the embedded copy in src/db/migrations.gen.ts is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
# drizzle-kit takes `out` relative to the working directory.
tmp=.ci/.migrations-check
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp"
cp -r migrations "$tmp/migrations"
cat > "$tmp/drizzle.config.ts" <<CFG
export default { dialect: "sqlite", schema: "./src/db/schema.ts", out: "./$tmp/migrations" };
CFG
before=$(ls "$tmp/migrations" | wc -l)
out=$(npx drizzle-kit generate --config "$tmp/drizzle.config.ts" 2>&1) || { echo "$out" >&2; exit 1; }
after=$(ls "$tmp/migrations" | wc -l)
if [ "$before" != "$after" ] || ! grep -q "No schema changes" <<<"$out"; then
  echo "$out" >&2
  echo "schema.ts and migrations/ disagree: run 'npm run db:generate' and commit the new migration" >&2
  exit 1
fi
echo "migrations/ matches src/db/schema.ts"
bun src/db/embed-migrations.ts --check
