// Sends calls through Segment's @segment/analytics-node, configured as its
// README says with only `host` changed, and prints what went on the wire.
//
//   node analytics-node.mjs BASE_URL WRITE_KEY < calls.json
//
// calls.json is [{"method":"track","message":{...}}, ...]: each message is
// passed to the SDK method of that name (a timestamp as a Date). Stdout is
// {"calls":[{"message":<the call as sent>,"batch":<its request's other top-level fields>}]},
// on one line, last, in call order. Any delivery error exits 1, with a
// "delivery failed: " line on stderr for each error the SDK reported.
import { readFileSync } from 'node:fs'
import { Analytics } from '@segment/analytics-node'

const [host, writeKey] = process.argv.slice(2)
if (!host || !writeKey) {
  console.error('usage: node analytics-node.mjs BASE_URL WRITE_KEY < calls.json')
  process.exit(2)
}
// JSON has no dates; the SDKs document timestamp as a Date.
const calls = JSON.parse(readFileSync(0, 'utf8'), (key, value) => (key === 'timestamp' ? new Date(value) : value))

const analytics = new Analytics({ writeKey, host })

const errors = []
analytics.on('error', (err) => errors.push(`error event: ${err.code}: ${err.reason}`))

// The SDK reports each request it makes; keep the sent items by message id.
const sent = new Map()
analytics.on('http_request', (req) => {
  const { authorization, Authorization, ...headers } = req.headers
  console.error(`${req.method} ${req.url} ${JSON.stringify(headers)} (${req.body.length} bytes)`)
  const { batch, writeKey: _, ...rest } = JSON.parse(req.body)
  for (const message of batch) sent.set(message.messageId, { message, batch: rest })
})
analytics.on('http_response', (res) => console.error(`-> ${res.status} ${res.statusText}`))

const ids = new Array(calls.length)
calls.forEach(({ method, message }, i) => {
  analytics[method](message, (err, ctx) => {
    if (err) errors.push(`${method} #${i}: ${err}`)
    ids[i] = ctx?.event?.messageId
  })
})
await analytics.closeAndFlush({ timeout: 30000 })

const out = ids.map((id) => sent.get(id))
out.forEach((c, i) => c ?? errors.push(`call #${i}: message ${ids[i]} was never sent`))
if (errors.length > 0) {
  for (const e of errors) console.error(`delivery failed: ${e}`)
  process.exit(1)
}
console.log(JSON.stringify({ calls: out }))
