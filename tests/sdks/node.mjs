// Sends one identify through one of the Node.js SDKs and waits for its delivery:
//   node node.mjs '{"sdk": "segment"|"rudderstack"|"amplitude", "edge": "http://127.0.0.1:P",
//                   "writeKey": "…", "userId": "…", "traits": {…}}'
// Each SDK retries a failed delivery with its own backoff, kept short here.
// Prints one JSON line: {"failure": null | "…"}.
import { Analytics as SegmentAnalytics } from '@segment/analytics-node';
import RudderAnalytics from '@rudderstack/rudder-sdk-node';
import * as amplitude from '@amplitude/analytics-node';

const { sdk, edge, writeKey, userId, traits } = JSON.parse(process.argv[2]);

async function segment() {
  const client = new SegmentAnalytics({ writeKey, host: edge, flushAt: 1, maxRetries: 5 });
  const errors = [];
  client.on('error', (error) => errors.push(String(error && error.reason ? error.reason : error)));
  await new Promise((resolve, reject) =>
    client.identify({ userId, traits }, (error) => (error ? reject(error) : resolve())),
  );
  await client.closeAndFlush({ timeout: 30000 });
  if (errors.length) throw new Error(errors.join('; '));
}

async function rudderstack() {
  const client = new RudderAnalytics(writeKey, {
    dataPlaneUrl: edge,
    flushAt: 1,
    retryCount: 5,
    axiosRetryConfig: { retryDelay: () => 200 },
    logLevel: 'error',
  });
  await new Promise((resolve, reject) =>
    client.identify({ userId, traits }, (error) => (error ? reject(error) : resolve())),
  );
}

async function amplitudeSdk() {
  const client = amplitude.createInstance();
  await client.init(writeKey, { serverUrl: `${edge}/2/httpapi`, flushQueueSize: 1, flushMaxRetries: 5, logLevel: 1 }).promise;
  const identify = new amplitude.Identify();
  for (const [name, value] of Object.entries(traits)) identify.set(name, value);
  identify.add('visits', 1);
  const result = await client.identify(identify, { user_id: userId }).promise;
  if (result.code !== 200) throw new Error(`amplitude: ${result.code} ${result.message}`);
}

let failure = null;
try {
  await { segment, rudderstack, amplitude: amplitudeSdk }[sdk]();
} catch (error) {
  failure = String(error && error.stack ? error.stack : error);
}
process.stdout.write(`${JSON.stringify({ failure })}\n`);
process.exit(failure ? 1 : 0);
