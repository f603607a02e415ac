// The page under test: the three browser SDKs, bundled, each configured to send only
// to the edge (no settings or plugins fetched from their vendors). The driver calls
// window.sdk.<name>.identify(...) and then leaves the page or waits for delivery.
import { AnalyticsBrowser } from '@segment/analytics-next';
import * as amplitude from '@amplitude/analytics-browser';
import { RudderAnalytics } from '@rudderstack/analytics-js/bundled';

const delivered = [];
window.delivered = delivered;

async function segment({ edge, writeKey, unload }) {
  const apiHost = `${edge.replace(/^https?:\/\//, '')}/v1`;
  const integration = {
    apiKey: writeKey,
    apiHost,
    protocol: 'http',
    // On leaving, the batch goes out with fetch(..., {keepalive: true}).
    ...(unload ? { deliveryStrategy: { strategy: 'batching', config: { size: 100, timeout: 60000 } } } : {}),
  };
  const [analytics] = await AnalyticsBrowser.load(
    { writeKey, cdnURL: edge, cdnSettings: { integrations: { 'Segment.io': integration } } },
    { integrations: { 'Segment.io': integration } },
  );
  return {
    async identify(userId, traits) {
      const ctx = await analytics.identify(userId, traits);
      delivered.push(ctx.event.messageId);
    },
  };
}

async function amplitudeSdk({ edge, writeKey, unload }) {
  const client = amplitude.createInstance();
  await client.init(writeKey, undefined, {
    serverUrl: `${edge}/2/httpapi`,
    autocapture: false,
    fetchRemoteConfig: false,
    enableDiagnostics: false,
    flushIntervalMillis: unload ? 60000 : 100,
    flushQueueSize: 100,
    flushMaxRetries: 5,
    logLevel: amplitude.Types.LogLevel.Warn,
  }).promise;
  if (unload) {
    // Amplitude's advice for events still queued when the page goes away.
    window.addEventListener('pagehide', () => {
      client.setTransport('beacon');
      client.flush();
    });
  }
  return {
    async identify(userId, traits) {
      client.setUserId(userId);
      const identify = new amplitude.Identify();
      for (const [name, value] of Object.entries(traits)) identify.set(name, value);
      identify.add('visits', 1);
      const sent = client.identify(identify);
      if (!unload) {
        const result = await sent.promise;
        if (result.code !== 200) throw new Error(`amplitude: ${result.code} ${result.message}`);
        delivered.push(result.event.insert_id);
      }
    },
  };
}

async function rudderstack({ edge, writeKey, unload }) {
  const analytics = new RudderAnalytics();
  await new Promise((resolve) => {
    analytics.load(writeKey, edge, {
      getSourceConfig: () => ({
        source: { id: 'local', name: 'local', workspaceId: 'local', enabled: true, config: {}, destinations: [] },
      }),
      useBeacon: Boolean(unload),
      beaconQueueOptions: { flushQueueInterval: 60000 },
      queueOptions: { maxRetryDelay: 1000, minRetryDelay: 200, batch: { enabled: false } },
      loadIntegration: false,
      polyfillIfRequired: false,
      sendAdblockPage: false,
      sessions: { autoTrack: false },
      autoTrack: { pageLifecycle: { enabled: false } },
      consentManagement: { enabled: false },
      logLevel: 'WARN',
      onLoaded: resolve,
    });
  });
  return {
    async identify(userId, traits) {
      await new Promise((resolve) => analytics.identify(userId, traits, resolve));
    },
  };
}

window.sdk = { segment, amplitude: amplitudeSdk, rudderstack };
