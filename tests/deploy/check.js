#!/usr/bin/env node
// Offline checks of a kustomization (deploy/kubernetes and its overlays), with no cluster
// and no kustomize binary (neither is in Debian 12):
//
// 1. Render: a small renderer of the kustomization features these manifests use, and no
//    other (an unknown field of a kustomization.yaml is an error, so that nothing is
//    silently skipped): `resources` (files and directories), `patches` (strategic merge
//    by kind and name, or an RFC 6902 JSON patch with a `target`), `images`, `labels`.
// 2. Schemas: every rendered object is validated with the Kubernetes API's JSON schemas
//    (npm kubernetes-models: ajv validators generated from the OpenAPI spec), and, since
//    those allow unknown fields, every field is also looked up in the models' type
//    declarations, so that a misspelt field is an error as with `kubectl --validate=strict`.
// 3. The sidecar's own rules (README: Deploying on Kubernetes): the Service targets the
//    sidecar's port, the probes are on the admin port, the grace period is longer than the
//    preStop hook plus cutover's drain, non-root and read-only, the spool on an emptyDir,
//    a backfill Job with parallelism above 1.
//
//   node check.js DIR [OUT]   writes OUT/cutover.json (the ConfigMap's configuration) and
//                             OUT/secret.env (the Secret's variables) for `config check`
'use strict';
const fs = require('fs');
const path = require('path');
const YAML = require('yaml');

const problems = [];
const fail = (where, msg) => problems.push(`${where}: ${msg}`);

// ---- rendering --------------------------------------------------------------------------

function readDocs(file) {
    const docs = YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'));
    const out = [];
    for (const d of docs) {
        if (d.errors.length)
            throw new Error(`${file}: ${d.errors[0].message}`);
        const v = d.toJS();
        if (v !== null && v !== undefined)
            out.push(v);
    }
    return out;
}

const KNOWN = new Set(['apiVersion', 'kind', 'resources', 'patches', 'images', 'labels']);

function render(dir) {
    const kfile = path.join(dir, 'kustomization.yaml');
    const [k] = readDocs(kfile);
    for (const key of Object.keys(k))
        if (!KNOWN.has(key))
            throw new Error(`${kfile}: field '${key}' is not handled by this renderer`);
    let objs = [];
    for (const r of k.resources || []) {
        const p = path.join(dir, r);
        if (!fs.existsSync(p))
            throw new Error(`${kfile}: resource ${r} not found`);
        objs = objs.concat(fs.statSync(p).isDirectory() ? render(p) : readDocs(p));
    }
    for (const p of k.patches || []) {
        const file = path.join(dir, p.path);
        const [patch] = readDocs(file);
        if (Array.isArray(patch)) {
            if (!p.target)
                throw new Error(`${file}: a JSON patch needs a target`);
            const hits = objs.filter(o => matches(o, p.target));
            if (hits.length === 0)
                throw new Error(`${file}: the target matches no resource`);
            hits.forEach(o => jsonPatch(o, patch, file));
        } else {
            const o = objs.find(x => x.kind === patch.kind && x.metadata.name === patch.metadata.name);
            if (!o)
                throw new Error(`${file}: no ${patch.kind} ${patch.metadata.name} to patch`);
            merge(o, patch);
        }
    }
    for (const img of k.images || [])
        objs.forEach(o => setImages(o, img));
    for (const l of k.labels || [])
        objs.forEach(o => {
            o.metadata.labels = Object.assign(o.metadata.labels || {}, l.pairs);
        });
    const seen = new Set();
    for (const o of objs) {
        const id = `${o.kind}/${o.metadata && o.metadata.name}`;
        if (seen.has(id))
            throw new Error(`${dir}: ${id} twice`);
        seen.add(id);
    }
    return objs;
}

function matches(o, t) {
    const [group, version] = o.apiVersion.includes('/') ? o.apiVersion.split('/') : ['', o.apiVersion];
    return (!t.kind || t.kind === o.kind) && (!t.name || t.name === o.metadata.name) &&
           (t.group === undefined || t.group === group) && (!t.version || t.version === version);
}

function pointer(p) {
    return p.split('/').slice(1).map(s => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function parentOf(doc, p, file) {
    const parts = pointer(p);
    const last = parts.pop();
    let cur = doc;
    for (const s of parts) {
        if (cur === null || typeof cur !== 'object' || !(s in cur))
            throw new Error(`${file}: path ${p} does not exist`);
        cur = cur[s];
    }
    return [cur, last];
}

function jsonPatch(doc, ops, file) {
    for (const op of ops) {
        if (op.op === 'move') {
            const [fp, fk] = parentOf(doc, op.from, file);
            if (!(fk in fp))
                throw new Error(`${file}: path ${op.from} does not exist`);
            const v = Array.isArray(fp) ? fp.splice(Number(fk), 1)[0] : fp[fk];
            if (!Array.isArray(fp))
                delete fp[fk];
            jsonPatch(doc, [{op: 'add', path: op.path, value: v}], file);
            continue;
        }
        const [par, key] = parentOf(doc, op.path, file);
        if (op.op === 'add') {
            if (Array.isArray(par))
                key === '-' ? par.push(op.value) : par.splice(Number(key), 0, op.value);
            else
                par[key] = op.value;
        } else if (op.op === 'remove' || op.op === 'replace') {
            if (!(key in par))
                throw new Error(`${file}: path ${op.path} does not exist`);
            if (op.op === 'replace')
                par[key] = op.value;
            else if (Array.isArray(par))
                par.splice(Number(key), 1);
            else
                delete par[key];
        } else {
            throw new Error(`${file}: op ${op.op} is not handled by this renderer`);
        }
    }
}

// strategic merge, as far as these manifests need: maps merged, lists of named items merged
// by name, other lists replaced
function merge(dst, src) {
    for (const [k, v] of Object.entries(src)) {
        if (Array.isArray(v) && Array.isArray(dst[k]) && v.every(x => x && x.name)) {
            for (const item of v) {
                const d = dst[k].find(x => x.name === item.name);
                d ? merge(d, item) : dst[k].push(item);
            }
        } else if (v && typeof v === 'object' && !Array.isArray(v) && dst[k] && typeof dst[k] === 'object') {
            merge(dst[k], v);
        } else {
            dst[k] = v;
        }
    }
}

function setImages(o, img) {
    const spec = podSpec(o);
    if (!spec)
        return;
    for (const c of (spec.containers || []).concat(spec.initContainers || [])) {
        const name = c.image.replace(/[:@].*$/, '');
        if (name === img.name)
            c.image = `${img.newName || img.name}:${img.newTag || 'latest'}`;
    }
}

function podSpec(o) {
    return o.spec && o.spec.template && o.spec.template.spec;
}

// ---- schemas ----------------------------------------------------------------------------

const modules = path.join(__dirname, 'node_modules');
const ifaces = new Map();

// The fields of a model's interface, from its type declaration file:
// {fields: {name: type}, imports: {TypeName: file}}
function iface(dts) {
    if (ifaces.has(dts))
        return ifaces.get(dts);
    const text = fs.readFileSync(dts, 'utf8');
    const imports = {};
    for (const m of text.matchAll(/import \{ (\w+) \} from "([^"]+)";/g)) {
        const from = m[2].startsWith('.') ? path.join(path.dirname(dts), m[2]) : path.join(modules, m[2]);
        imports[m[1]] = from + '.d.ts';
    }
    const body = text.match(/export interface \w+(?: extends \w+)? \{([\s\S]*?)\n\}/);
    const fields = {};
    for (const m of (body ? body[1] : '').matchAll(/^ {4}"([^"]+)"\??: ([^{\n]+|\{[\s\S]*?\n {4}\});$/gm))
        fields[m[1]] = m[2];
    const r = {fields, imports};
    ifaces.set(dts, r);
    return r;
}

function strict(value, dts, where) {
    if (value === null || typeof value !== 'object' || Array.isArray(value))
        return;
    const {fields, imports} = iface(dts);
    for (const [k, v] of Object.entries(value)) {
        if (!(k in fields)) {
            fail(where, `unknown field '${k}'`);
            continue;
        }
        const t = fields[k];
        const arr = t.match(/^Array<(\w+)>$/);
        const name = arr ? arr[1] : t;
        if (!imports[name])
            continue; // a scalar, a map or a union: the schema validator checked it
        if (arr && Array.isArray(v))
            v.forEach((x, i) => strict(x, imports[name], `${where}.${k}[${i}]`));
        else if (!arr)
            strict(v, imports[name], `${where}.${k}`);
    }
}

function validate(o, where) {
    const base = path.join(modules, 'kubernetes-models', o.apiVersion, o.kind);
    if (!fs.existsSync(base + '.js')) {
        fail(where, `no schema for ${o.apiVersion} ${o.kind}`);
        return;
    }
    const Model = require(base)[o.kind];
    try {
        new Model(o).validate();
    } catch (e) {
        fail(where, e.message);
    }
    strict(o, base + '.d.ts', where);
}

// ---- cutover's rules --------------------------------------------------------------------

function sleepOf(c) {
    const h = c.lifecycle && c.lifecycle.preStop;
    if (h && h.sleep)
        return h.sleep.seconds;
    if (h && h.exec && h.exec.command[0] === 'sleep')
        return Number(h.exec.command[1]);
    return 0;
}

function secure(c, where) {
    const s = c.securityContext || {};
    if (s.readOnlyRootFilesystem !== true || s.allowPrivilegeEscalation !== false)
        fail(where, 'needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false');
}

function rules(objs, dir) {
    const by = (kind, name) => objs.find(o => o.kind === kind && o.metadata.name === name);
    const cm = by('ConfigMap', 'cutover-config');
    const secret = by('Secret', 'cutover-secrets');
    const dep = by('Deployment', 'documents-app');
    const svc = by('Service', 'documents-app');
    if (!cm || !secret || !dep || !svc) {
        fail(dir, 'ConfigMap cutover-config, Secret cutover-secrets, Deployment and Service documents-app are needed');
        return null;
    }
    const cfg = JSON.parse(cm.data['cutover.json']);
    const spec = podSpec(dep);
    const all = (spec.containers || []).concat(spec.initContainers || []);
    const cut = all.find(c => c.image.includes('cutover'));
    const where = `${dir}: Deployment documents-app`;
    if (!cut) {
        fail(where, 'no cutover container');
        return null;
    }
    const port = n => (cut.ports || []).find(p => p.name === n);
    const listenPort = s => Number(s.split(':').pop());
    if (!port('http') || port('http').containerPort !== listenPort(cfg.listen))
        fail(where, "the sidecar's port `http` must be the configuration's listen port");
    if (!port('admin') || port('admin').containerPort !== listenPort(cfg.admin.listen))
        fail(where, "the sidecar's port `admin` must be the configuration's admin.listen port");
    if (svc.spec.ports.some(p => p.targetPort !== 'http' && p.targetPort !== listenPort(cfg.listen)))
        fail(`${dir}: Service`, "every port must target the sidecar's port");
    const probe = (p, want) => p && p.httpGet && p.httpGet.path === want && p.httpGet.port === 'admin';
    if (!probe(cut.readinessProbe, '/readyz') || !probe(cut.livenessProbe, '/healthz'))
        fail(where, 'readiness on /readyz and liveness on /healthz of the admin port');
    const grace = (cfg.limits && cfg.limits.shutdown_grace_s) || 25;
    // SIGTERM comes after the preStop hook; the drain is 2 s (loops) + grace + 2 s (abort)
    const need = sleepOf(cut) + 2 + grace + 2;
    if (sleepOf(cut) < 5)
        fail(where, 'a preStop of at least 5 s lets the Service stop sending before the drain');
    if (!(spec.terminationGracePeriodSeconds > need))
        fail(where, `terminationGracePeriodSeconds must be above ${need} (preStop + drain)`);
    if (!spec.securityContext || spec.securityContext.runAsNonRoot !== true)
        fail(where, 'runAsNonRoot: true');
    all.forEach(c => secure(c, `${where} container ${c.name}`));
    const mount = (cut.volumeMounts || []).find(m => m.mountPath === cfg.spool_dir);
    const vol = mount && spec.volumes.find(v => v.name === mount.name);
    if (!vol || !vol.emptyDir)
        fail(where, 'the spool directory must be an emptyDir volume');
    if (spec.initContainers && spec.initContainers.includes(cut) && cut.restartPolicy !== 'Always')
        fail(where, 'cutover as an init container must be a native sidecar (restartPolicy: Always)');
    const ann = dep.spec.template.metadata.annotations || {};
    if (ann['prometheus.io/scrape'] !== 'true' || ann['prometheus.io/port'] !== String(port('admin').containerPort))
        fail(where, 'a Prometheus scrape annotation on the pod');
    for (const [name, cmd] of [['cutover-migrate-db', 'migrate-db'], ['cutover-backfill', 'backfill']]) {
        const job = by('Job', name);
        if (!job || podSpec(job).containers[0].args[0] !== cmd) {
            fail(dir, `a Job ${name} running \`cutover ${cmd}\``);
            continue;
        }
        podSpec(job).containers.forEach(c => secure(c, `${dir}: Job ${name}`));
    }
    const bf = by('Job', 'cutover-backfill');
    if (bf && !(bf.spec.parallelism > 1))
        fail(dir, 'the backfill Job runs with parallelism above 1');
    // every env: the configuration names is in the Secret (or set on the container)
    const env = new Set(Object.keys(secret.stringData || {}).concat((cut.env || []).map(e => e.name)));
    for (const m of cm.data['cutover.json'].matchAll(/"env:(\w+)"/g))
        if (!env.has(m[1]))
            fail(where, `the configuration reads $${m[1]}, which neither the Secret nor the container sets`);
    return {cfg: cm.data['cutover.json'], secret: secret.stringData || {}, cut, spec};
}

// ---- main -------------------------------------------------------------------------------

function main() {
    const dir = process.argv[2];
    const out = process.argv[3];
    let objs;
    try {
        objs = render(dir);
    } catch (e) {
        console.error(`render: ${e.message}`);
        process.exit(1);
    }
    objs.forEach(o => validate(o, `${dir}: ${o.kind} ${o.metadata.name}`));
    const r = rules(objs, dir);
    if (r && out) {
        fs.writeFileSync(path.join(out, 'cutover.json'), r.cfg);
        fs.writeFileSync(path.join(out, 'secret.env'),
                         Object.entries(r.secret).map(([k, v]) => `${k}=${v}\n`).join(''));
        fs.writeFileSync(path.join(out, 'rendered.json'), JSON.stringify(objs, null, 1));
    }
    if (problems.length) {
        problems.forEach(p => console.error(p));
        process.exit(1);
    }
    console.log(`${dir}: ${objs.length} objects rendered and valid (${objs.map(o => o.kind).join(', ')})`);
    return r;
}

module.exports = {render};
if (require.main === module)
    main();
