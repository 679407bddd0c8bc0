#!/usr/bin/env node
/*
 * Runs dashboard panel transformations through Grafana's own code: @grafana/data, the 11.6
 * build (pinned in package.json / package-lock.json), in plain Node.
 *
 * stdin: one job, or a JSON list of jobs (one Node start for many panels):
 *
 *   {"frames": [DataFrame, ...],          // DataFrameJSON ({schema, data}) or a plain
 *                                         // {name?, refId?, meta?, fields: [{name, type,
 *                                         //  values, labels?, config?}]}
 *    "transformations": [...],            // the panel's "transformations", as in its JSON
 *    "fieldConfig": {...}?,               // the panel's "fieldConfig": when given, Grafana's
 *                                         // applyFieldOverrides runs after the
 *                                         // transformations and each field gets its
 *                                         // formatted values ("display")
 *    "variables": {"name": "value"}?}     // for ${name} / $name left in transformation
 *                                         // options (Grafana interpolates those)
 *
 * stdout: for one job {"frames": [...]} (or {"error": ...}); for a list, a list of those.
 * With --serve: one such request per line of stdin, one answer per line of stdout (a
 * request that is no JSON answers {"fatal": ...}), until stdin closes.
 * Each output frame: {name, refId, length, meta, fields: [{name, type, labels, config,
 * values, displayName, state: {displayName}, display?}]}. "displayName" is what
 * getFieldDisplayName (the column header Grafana shows) returns for the field in its frame
 * among all output frames; state.displayName is the field's state as the transformations
 * left it. Non-finite numbers are written as the strings "NaN", "+Inf" and "-Inf".
 *
 * CommonJS, not ESM: the package's ESM build imports "react-use/lib/usePrevious" without
 * an extension, which only a bundler resolves; its CJS build loads in Node as is.
 */
'use strict';

// The DOM shims @grafana/data needs, no more: at import it reads window.grafanaBootData
// (feature toggles: none set here) and, running transformations,
// window.__grafanaSceneContext (unset: transformation options are interpolated through
// the context below, as outside a scenes dashboard; the same result when the caller
// already substituted the variables). Formatting a value reads navigator.languages, which
// Node 20 lacks: a browser set to en-US (the Python side also runs Node with TZ=UTC and an
// en-US locale, so numbers and dates format the same on every machine).
globalThis.window = globalThis.window || {};
if (typeof globalThis.navigator === 'undefined') {
  globalThis.navigator = { languages: ['en-US'], language: 'en-US' };
}

const g = require('@grafana/data');
const { lastValueFrom } = require('rxjs');

// Grafana's app fills the registry at start-up (public/app/features/transformers); the
// transformers themselves are the ones @grafana/data ships (standardTransformers).
// (seriesToColumnsTransformer is joinByFieldTransformer again, under its old name.) An id
// that no transformer has fails the job, as it fails the panel in Grafana.
g.standardTransformersRegistry.setInit(() => {
  const byId = new Map();
  for (const t of Object.values(g.standardTransformers)) {
    if (!byId.has(t.id)) {
      byId.set(t.id, {
        id: t.id,
        aliasIds: t.aliasIds,
        name: t.name,
        description: t.description,
        transformation: t,
        editor: () => null,
      });
    }
  }
  return [...byId.values()];
});

// The standard field options (Grafana's app registers these with their editors; the
// processors are @grafana/data's). Only what a field's config and display need.
function standardFieldConfigs() {
  const always = () => true;
  const numbers = (field) => field.type === g.FieldType.number;
  const item = (id, process, shouldApply = always, settings = {}) => ({
    id, path: id, name: id, process, shouldApply, override: () => null, editor: () => null,
    settings,
  });
  return [
    item('unit', g.unitOverrideProcessor),
    item('min', g.numberOverrideProcessor, numbers),
    item('max', g.numberOverrideProcessor, numbers),
    item('fieldMinMax', g.booleanOverrideProcessor, numbers),
    item('decimals', g.numberOverrideProcessor),
    item('displayName', g.displayNameOverrideProcessor, always, { expandTemplateVars: true }),
    item('description', g.stringOverrideProcessor),
    item('noValue', g.stringOverrideProcessor),
    item('color', g.identityOverrideProcessor),
    item('links', g.dataLinksOverrideProcessor),
    item('mappings', g.valueMappingsOverrideProcessor),
    item('thresholds', g.thresholdsOverrideProcessor),
    item('filterable', g.booleanOverrideProcessor),
  ];
}

// A panel plugin's own options (custom.*): kept as given, like an identity processor.
function fieldConfigRegistry(fieldConfig) {
  const custom = new Set(Object.keys((fieldConfig.defaults || {}).custom || {}));
  for (const o of fieldConfig.overrides || []) {
    for (const p of o.properties || []) {
      if (typeof p.id === 'string' && p.id.startsWith('custom.')) {
        custom.add(p.id.slice('custom.'.length));
      }
    }
  }
  const items = standardFieldConfigs();
  for (const path of custom) {
    items.push({
      id: `custom.${path}`, path, name: path, isCustom: true,
      process: g.identityOverrideProcessor, shouldApply: () => true,
      override: () => null, editor: () => null, settings: {},
    });
  }
  return new g.FieldConfigOptionsRegistry(() => items);
}

function interpolator(variables) {
  if (!variables) {
    return (s) => s;
  }
  return (s) =>
    s.replace(/\$\{(\w+)\}|\$(\w+)/g, (m, a, b) => {
      const name = a || b;
      return Object.prototype.hasOwnProperty.call(variables, name) ? String(variables[name]) : m;
    });
}

function toFrame(f) {
  if (f && f.schema) {
    return g.dataFrameFromJSON(f);
  }
  return g.toDataFrame(f);
}

function jsonValue(v) {
  if (typeof v === 'number' && !Number.isFinite(v)) {
    return Number.isNaN(v) ? 'NaN' : v > 0 ? '+Inf' : '-Inf';
  }
  if (v instanceof Date) {
    return v.valueOf();
  }
  return v === undefined ? null : v;
}

// A field's config without what is not data (functions, circular scoped vars).
function plainConfig(config) {
  return JSON.parse(JSON.stringify(config || {}, (k, v) => (typeof v === 'function' ? undefined : jsonValue(v))));
}

function serialize(frames, withDisplay) {
  return frames.map((frame) => ({
    name: frame.name ?? null,
    refId: frame.refId ?? null,
    length: frame.length,
    meta: frame.meta ? plainConfig(frame.meta) : null,
    fields: frame.fields.map((field) => {
      const stateName = field.state && field.state.displayName != null ? field.state.displayName : null;
      const out = {
        name: field.name,
        type: field.type,
        labels: field.labels ?? null,
        config: plainConfig(field.config),
        values: Array.from(field.values, jsonValue),
        state: { displayName: stateName },
        // after reading state.displayName: this call caches into field.state
        displayName: g.getFieldDisplayName(field, frame, frames),
      };
      if (withDisplay && field.display) {
        out.display = Array.from(field.values, (v) => g.formattedValueToString(field.display(v)));
      }
      return out;
    }),
  }));
}

async function runJob(job) {
  const frames = (job.frames || []).map(toFrame);
  const ctx = { interpolate: interpolator(job.variables) };
  let out = await lastValueFrom(g.transformDataFrame(job.transformations || [], frames, ctx));
  const fieldConfig = job.fieldConfig;
  if (fieldConfig) {
    out = g.applyFieldOverrides({
      data: out,
      fieldConfig: { defaults: fieldConfig.defaults || {}, overrides: fieldConfig.overrides || [] },
      fieldConfigRegistry: fieldConfigRegistry(fieldConfig),
      replaceVariables: ctx.interpolate,
      theme: g.createTheme(),
      timeZone: job.timeZone || 'utc',
    });
  }
  return { frames: serialize(out, Boolean(fieldConfig)) };
}

async function answer(input) {
  const jobs = Array.isArray(input) ? input : [input];
  const results = [];
  for (const job of jobs) {
    try {
      results.push(await runJob(job));
    } catch (e) {
      results.push({ error: String((e && e.stack) || e) });
    }
  }
  return Array.isArray(input) ? results : results[0];
}

// --serve: one request per line of stdin (a job or a list of jobs, as above), one answer
// per line of stdout, in order, until stdin closes: a test session starts Node (and loads
// @grafana/data, most of a start's cost) once. JSON has no raw newline in it.
async function serve() {
  const lines = require('readline').createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) {
      continue;
    }
    let out;
    try {
      out = await answer(JSON.parse(line));
    } catch (e) {
      out = { fatal: String((e && e.stack) || e) };
    }
    process.stdout.write(JSON.stringify(out) + '\n');
  }
}

async function main() {
  if (process.argv.includes('--serve')) {
    return serve();
  }
  const chunks = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk);
  }
  process.stdout.write(JSON.stringify(await answer(JSON.parse(Buffer.concat(chunks).toString('utf8')))));
}

main().catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + '\n');
  process.exit(1);
});
