// The Vercel AI SDK 7 (`ai` + `@ai-sdk/openai` + `@ai-sdk/otel`) with the OpenTelemetry JS
// SDK, as a Node application would run it, driven by tests/instrumentation/test_vercel_ai_7.py.
//
//   node vercel_ai_7.mjs PLAN.json
//
// In AI SDK 7 the `ai` package makes no OpenTelemetry spans itself: the application
// registers a telemetry integration once, here `registerTelemetry(new OpenTelemetry(...))`
// from `@ai-sdk/otel` (or `LegacyOpenTelemetry`, the 6.x `ai.*` spans), and every call is
// traced unless it says `telemetry: {isEnabled: false}`.
//
// PLAN.json:
//   baseURL       the fake OpenAI server (http://127.0.0.1:PORT/v1)
//   otlpEndpoint  the service's OTLP/HTTP traces URL (http://127.0.0.1:PORT/v1/traces)
//   processor     "batch" (BatchSpanProcessor, what an application uses) or "simple"
//                 (one export per span, in end order: children before their parents)
//   integration   "otel" (default: `new OpenTelemetry(options)`) or "legacy"
//                 (`new LegacyOpenTelemetry(options)`)
//   options       the integration's options (default {runtimeContext: true}: without it
//                 `@ai-sdk/otel` writes no `ai.settings.context.*` attribute)
//   spansOut      optional: a file to write every finished span to (name, ids, attributes)
//   steps         a list, run in order; each one is either
//                 {"span": NAME, "attributes": {...}, "steps": [...]}: an application span
//                   (an agent, a workflow, a request), active around its steps; or
//                 {"call": "generateText" | "streamText" | "embed" | "embedMany", "id": ...,
//                  "model": ..., "usage": "prompt=100,completion=50" (optional X-Fake-Usage
//                  header), "context": {...} (the call's runtimeContext, every key included
//                  in telemetry with `telemetry.includeRuntimeContext` unless
//                  "includeContext": false), "functionId": ...
//                  (optional), "tool": true (optional: a `lookup` tool the model may call,
//                  up to 3 steps), "baseURL": ... (optional: another server for this call)}:
//                  one model call, through openai.chat(model) (the Chat Completions API that
//                  the fake server answers) or openai.embedding(model).
//
// Prints one JSON line per call ({"id", "usage", "steps"} as the SDK returned them, or
// {"id", "error"}), then {"flushed": true} once every span has been exported (the exporter's
// flush, then shutdown). Exits 1 if the export failed.
import { readFileSync, writeFileSync } from "node:fs";

import { createOpenAI } from "@ai-sdk/openai";
import { LegacyOpenTelemetry, OpenTelemetry } from "@ai-sdk/otel";
import { SpanStatusCode, trace } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  BatchSpanProcessor,
  InMemorySpanExporter,
  NodeTracerProvider,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-node";
import {
  embed,
  embedMany,
  generateText,
  jsonSchema,
  registerTelemetry,
  stepCountIs,
  streamText,
  tool,
} from "ai";

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
  resource: resourceFromAttributes({ "service.name": "vercel-ai-7-tests" }),
  spanProcessors: processors,
});
provider.register(); // the global provider and the async-hooks context manager
const tracer = trace.getTracer("tests.instrumentation.vercel-ai-7");

// The integration's tracer is the global provider's (trace.getTracer("gen_ai")).
const Integration = plan.integration === "legacy" ? LegacyOpenTelemetry : OpenTelemetry;
registerTelemetry(new Integration(plan.options ?? { runtimeContext: true }));

const providers = new Map();
function openaiFor(baseURL) {
  if (!providers.has(baseURL)) providers.set(baseURL, createOpenAI({ baseURL, apiKey: "sk-test" }));
  return providers.get(baseURL);
}

const lookup = tool({
  description: "Look up an article of the help centre.",
  inputSchema: jsonSchema({
    type: "object",
    properties: { topic: { type: "string" } },
    required: ["topic"],
  }),
  execute: async ({ topic }) => ({ topic, article: "Use the 'Forgot password' link." }),
});

function emit(doc) {
  process.stdout.write(JSON.stringify(doc) + "\n");
}

function telemetryOf(step) {
  const context = step.context ?? {};
  return {
    functionId: step.functionId,
    includeRuntimeContext: step.includeContext === false
      ? undefined
      : Object.fromEntries(Object.keys(context).map((key) => [key, true])),
  };
}

async function call(step) {
  const openai = openaiFor(step.baseURL ?? plan.baseURL);
  const common = {
    maxRetries: 0,
    headers: step.usage ? { "X-Fake-Usage": step.usage } : undefined,
    runtimeContext: step.context ?? {},
    telemetry: telemetryOf(step),
  };
  const textOptions = {
    ...common,
    model: openai.chat(step.model),
    prompt: "How do I reset my password?",
    ...(step.tool ? { tools: { lookup }, stopWhen: stepCountIs(3) } : {}),
  };
  try {
    if (step.call === "generateText") {
      const result = await generateText(textOptions);
      emit({ id: step.id, usage: result.usage, steps: result.steps.map((s) => s.usage) });
    } else if (step.call === "streamText") {
      let streamError = null;
      const result = streamText({ ...textOptions, onError: ({ error }) => (streamError = error) });
      for await (const delta of result.textStream) void delta;
      if (streamError) throw streamError;
      const steps = await result.steps;
      emit({ id: step.id, usage: await result.totalUsage, steps: steps.map((s) => s.usage) });
    } else if (step.call === "embed") {
      const result = await embed({
        ...common,
        model: openai.embedding(step.model),
        value: "reset password",
      });
      emit({ id: step.id, usage: result.usage });
    } else if (step.call === "embedMany") {
      const result = await embedMany({
        ...common,
        model: openai.embedding(step.model),
        values: ["reset password", "forgot password"],
      });
      emit({ id: step.id, usage: result.usage });
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
    kind: span.kind,
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
