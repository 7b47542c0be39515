// Sends calls through RudderStack's @rudderstack/rudder-sdk-node, configured
// as its README says with only `dataPlaneUrl` changed, and prints what went
// on the wire.
//
//   node rudder-sdk-node.mjs BASE_URL WRITE_KEY < calls.json
//
// calls.json is [{"method":"track","message":{...}}, ...]: each message is
// passed to the SDK method of that name (a timestamp as a Date). Stdout is
// {"calls":[{"message":<the call as sent>,"batch":<its request's other top-level fields>}]},
// on one line, last, in call order. Any delivery error exits 1, with a
// "delivery failed: " line on stderr for each error the SDK reported.
import { readFileSync } from 'node:fs'
import { gunzipSync } from 'node:zlib'
import Analytics from '@rudderstack/rudder-sdk-node'

const [dataPlaneUrl, writeKey] = process.argv.slice(2)
if (!dataPlaneUrl || !writeKey) {
  console.error('usage: node rudder-sdk-node.mjs BASE_URL WRITE_KEY < calls.json')
  process.exit(2)
}
// JSON has no dates; the SDKs document timestamp as a Date.
const calls = JSON.parse(readFileSync(0, 'utf8'), (key, value) => (key === 'timestamp' ? new Date(value) : value))

const errors = []
const client = new Analytics(writeKey, {
  dataPlaneUrl,
  // The documented hook for a failed request; without it the SDK rethrows
  // from a flush nobody awaits.
  errorHandler: (err) => errors.push(`request failed: ${err.message}${err.response ? ` (${JSON.stringify(err.response.data)})` : ''}`),
})

// Each callback gets the whole request body its call went in (gzipped, as
// sent); calls of one request come back in order, so the k-th callback of a
// body is the k-th item of its batch.
const parsed = new Map()
const seen = new Map()
const out = new Array(calls.length)
calls.forEach(({ method, message }, i) => {
  client[method](message, (err, data) => {
    if (err) {
      errors.push(`${method} #${i}: ${err.message ?? err}`)
      return
    }
    if (!parsed.has(data)) {
      parsed.set(data, JSON.parse(Buffer.isBuffer(data) ? gunzipSync(data) : JSON.stringify(data)))
    }
    const { batch, ...rest } = parsed.get(data)
    const k = seen.get(data) ?? 0
    seen.set(data, k + 1)
    out[i] = { message: batch[k], batch: rest }
  })
})
await client.flush()
// Callbacks run on setImmediate after the request completes.
await new Promise((resolve) => setImmediate(resolve))

out.forEach((c, i) => c ?? errors.push(`call #${i} was never acknowledged`))
if (errors.length > 0) {
  for (const e of errors) console.error(`delivery failed: ${e}`)
  process.exit(1)
}
console.log(JSON.stringify({ calls: out }))
