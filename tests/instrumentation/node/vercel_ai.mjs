// The Vercel AI SDK (`ai` + `@ai-sdk/openai`) with the OpenTelemetry JS SDK, as a Node
// application would run it, driven by tests/instrumentation/test_vercel_ai.py.
//
//   node vercel_ai.mjs PLAN.json
//
// PLAN.json:
//   baseURL       the fake OpenAI server (http://127.0.0.1:PORT/v1)
//   otlpEndpoint  the service's OTLP/HTTP traces URL (http://127.0.0.1:PORT/v1/traces)
//   processor     "batch" (BatchSpanProcessor, what an application uses) or "simple"
//                 (one export per span, in end order: children before their parents)
//   spansOut      optional: a file to write every finished span to (name, ids, attributes)
//   steps         a list, run in order; each one is either
//                 {"span": NAME, "attributes": {...}, "steps": [...]}: an application span
//                   (an agent, a workflow, a request), active around its steps; or
//                 {"call": "generateText" | "streamText", "id": ..., "model": ...,
//                  "usage": "prompt=100,completion=50" (optional X-Fake-Usage header),
//                  "metadata": {...} (experimental_telemetry.metadata),
//                  "functionId": ... (optional)}: one model call, through openai.chat(model)
//                   (the Chat Completions API that the fake server answers).
//
// Prints one JSON line per call ({"id", "usage"} as the SDK returned it, or {"id",
// "error"}), then {"flushed": true} once every span has been exported (the exporter's
// flush, then shutdown). Exits 1 if the export failed.
import { readFileSync, writeFileSync } from "node:fs";

import { createOpenAI } from "@ai-sdk/openai";
import { SpanStatusCode, trace } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  BatchSpanProcessor,
  InMemorySpanExporter,
  NodeTracerProvider,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-node";
import { generateText, streamText } from "ai";

const plan = JSON.parse(readFileSync(process.argv[2], "utf8"));

let exportFailed = null;
const otlp = new OTLPTraceExporter({ url: plan.otlpEndpoint });
const exportOtlp = otlp.export.bind(otlp);
otlp.export = (spans, done) =>
  exportOtlp(spans, (result) => {
    if (result.code !== 0) exportFailed = result.error ?? new Error("OTLP export failed");
    done(result);
  });
const captured = new InMemorySpanExporter();
const processors = [
  plan.processor === "simple" ? new SimpleSpanProcessor(otlp) : new BatchSpanProcessor(otlp),
  new SimpleSpanProcessor(captured),
];
const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ "service.name": "vercel-ai-tests" }),
  spanProcessors: processors,
});
provider.register(); // the global provider and the async-hooks context manager
const tracer = trace.getTracer("tests.instrumentation.vercel-ai");

const openai = createOpenAI({ baseURL: plan.baseURL, apiKey: "sk-test" });

function emit(doc) {
  process.stdout.write(JSON.stringify(doc) + "\n");
}

async function call(step) {
  const options = {
    model: openai.chat(step.model),
    prompt: "How do I reset my password?",
    maxRetries: 0,
    headers: step.usage ? { "X-Fake-Usage": step.usage } : undefined,
    experimental_telemetry: {
      isEnabled: true,
      functionId: step.functionId,
      metadata: step.metadata ?? {},
    },
  };
  try {
    if (step.call === "generateText") {
      const result = await generateText(options);
      emit({ id: step.id, usage: result.usage, text: result.text });
    } else if (step.call === "streamText") {
      let streamError = null;
      const result = streamText({ ...options, onError: ({ error }) => (streamError = error) });
      let text = "";
      for await (const delta of result.textStream) text += delta;
      if (streamError) throw streamError;
      emit({ id: step.id, usage: await result.usage, text });
    } else {
      throw new Error(`unknown call ${step.call}`);
    }
  } catch (error) {
    emit({ id: step.id, error: String(error?.message ?? error) });
  }
}

async function run(steps) {
  for (const step of steps) {
    if (step.span) {
      await tracer.startActiveSpan(step.span, { attributes: step.attributes ?? {} }, async (span) => {
        try {
          await run(step.steps ?? []);
        } catch (error) {
          span.setStatus({ code: SpanStatusCode.ERROR, message: String(error) });
          throw error;
        } finally {
          span.end();
        }
      });
    } else {
      await call(step);
    }
  }
}

function describe(span) {
  return {
    name: span.name,
    spanId: span.spanContext().spanId,
    parentSpanId: span.parentSpanContext?.spanId ?? span.parentSpanId ?? null,
    status: span.status.code,
    attributes: span.attributes,
  };
}

await run(plan.steps);
await provider.forceFlush();
if (plan.spansOut) {
  writeFileSync(plan.spansOut, JSON.stringify(captured.getFinishedSpans().map(describe), null, 1));
}
await provider.shutdown();
if (exportFailed) {
  process.stderr.write(`OTLP export failed: ${exportFailed}\n`);
  process.exit(1);
}
emit({ flushed: true });
