'use strict';
// Sends a few traces to tracedx with the OpenTelemetry JS SDK and its
// OTLP/HTTP protobuf exporter, then prints what it sent as JSON so the Go
// end-to-end test can read every span back and compare.
//
// Usage: node send.js http://127.0.0.1:4318/v1/traces [traces]

const api = require('@opentelemetry/api');
const { BasicTracerProvider, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { resourceFromAttributes } = require('@opentelemetry/resources');

async function main() {
  const url = process.argv[2];
  const traces = Number(process.argv[3] || 3);
  if (!url || !Number.isInteger(traces) || traces < 1) {
    console.error('usage: node send.js OTLP_TRACES_URL [traces]');
    process.exit(2);
  }
  const exporter = new OTLPTraceExporter({ url });
  const sent = [];
  // Record what the exporter was handed, so the test compares against the
  // SDK's own ids rather than ids this script computed.
  const recorder = {
    onStart() {},
    onEnd(span) {
      const sc = span.spanContext();
      sent.push({
        trace_id: sc.traceId,
        span_id: sc.spanId,
        parent_span_id: span.parentSpanContext ? span.parentSpanContext.spanId : '',
        name: span.name,
      });
    },
    forceFlush() { return Promise.resolve(); },
    shutdown() { return Promise.resolve(); },
  };
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'js-checkout', 'service.version': '0.3.1' }),
    spanProcessors: [recorder, new SimpleSpanProcessor(exporter)],
  });
  const tracer = provider.getTracer('tracedx-e2e-js', '1.0.0');

  for (let i = 0; i < traces; i++) {
    const root = tracer.startSpan('POST /checkout', {
      kind: api.SpanKind.SERVER,
      attributes: { 'http.request.method': 'POST', 'http.route': '/checkout', 'e2e.iteration': i },
    });
    const ctx = api.trace.setSpan(api.context.active(), root);
    const db = tracer.startSpan('SELECT shop.carts', {
      kind: api.SpanKind.CLIENT,
      attributes: { 'db.system': 'postgresql', 'db.query.text': `SELECT * FROM carts WHERE id = ${100 + i}` },
    }, ctx);
    db.end();
    const pay = tracer.startSpan('POST /charge', {
      kind: api.SpanKind.CLIENT,
      attributes: { 'http.request.method': 'POST', 'server.address': 'payment' },
    }, ctx);
    pay.setStatus({ code: api.SpanStatusCode.ERROR, message: 'card declined' });
    pay.end();
    root.setAttribute('http.response.status_code', 200);
    root.end();
  }
  await provider.forceFlush();
  await provider.shutdown();
  process.stdout.write(JSON.stringify(sent) + '\n');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
