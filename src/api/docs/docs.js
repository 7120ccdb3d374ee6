// Renders /openapi.json as a reference page. Every node is built with
// textContent (nothing from the document is parsed as HTML), so the page
// runs under `default-src 'self'` with no inline script or style.
"use strict";

const METHODS = ["get", "post", "put", "patch", "delete"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Descriptions are Markdown; this shows their `code` spans and paragraphs,
// and leaves the rest as text.
function prose(text, tag = "div") {
  const box = el(tag, { class: "prose" });
  if (!text) return box;
  for (const paragraph of String(text).split(/\n\s*\n/)) {
    const p = el("p");
    String(paragraph).replace(/\n/g, " ").split(/(`[^`]*`)/).forEach((part) => {
      if (part.startsWith("`") && part.endsWith("`") && part.length > 1) p.append(el("code", {}, part.slice(1, -1)));
      else if (part) p.append(part);
    });
    box.append(p);
  }
  return box;
}

function anchor(text) {
  return String(text).toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
}

function refName(ref) {
  return ref.split("/").pop();
}

class Reference {
  constructor(doc) {
    this.doc = doc;
  }

  resolve(node) {
    let seen = 0;
    while (node && node.$ref && seen++ < 20) {
      const path = node.$ref.replace(/^#\//, "").split("/");
      node = path.reduce((at, key) => (at ? at[key.replace(/~1/g, "/").replace(/~0/g, "~")] : undefined), this.doc);
    }
    return node || {};
  }

  typeOf(schema) {
    if (!schema) return "any";
    if (schema.$ref) return refName(schema.$ref);
    const variants = schema.oneOf || schema.anyOf;
    if (variants) return variants.map((v) => this.typeOf(v)).join(" | ");
    if (schema.allOf) return schema.allOf.map((v) => this.typeOf(v)).filter((t) => t !== "object").join(" & ") || "object";
    let type = schema.type || (schema.properties ? "object" : "any");
    if (Array.isArray(type)) type = type.join(" | ");
    if (String(type).includes("array") && schema.items) type = type.replace("array", `${this.typeOf(schema.items)}[]`);
    if (schema.enum) type += ` (${schema.enum.map((v) => JSON.stringify(v)).join(", ")})`;
    if (schema.const !== undefined) type = JSON.stringify(schema.const);
    return type;
  }

  constraints(schema) {
    const parts = [];
    const keys = [["format", "format"], ["pattern", "pattern"], ["minLength", "min length"], ["maxLength", "max length"],
      ["minimum", "min"], ["maximum", "max"], ["minItems", "min items"], ["maxItems", "max items"], ["default", "default"]];
    for (const [key, label] of keys) {
      if (schema[key] !== undefined) parts.push(`${label} ${typeof schema[key] === "string" ? schema[key] : JSON.stringify(schema[key])}`);
    }
    return parts.join(" · ");
  }

  // Collects properties and required names through allOf and $ref.
  flatten(schema, depth = 0) {
    const node = this.resolve(schema);
    const result = { properties: {}, required: new Set(node.required || []), description: node.description };
    for (const part of node.allOf || []) {
      if (depth > 8) break;
      const inner = this.flatten(part, depth + 1);
      Object.assign(result.properties, inner.properties);
      inner.required.forEach((name) => result.required.add(name));
      result.description = result.description || inner.description;
    }
    Object.assign(result.properties, node.properties || {});
    return result;
  }

  schema(schema, depth = 0) {
    const box = el("div", { class: "schema" });
    const node = this.resolve(schema);
    box.append(el("div", {}, el("span", { class: "type" }, this.typeOf(schema)),
      this.constraints(node) ? el("span", { class: "constraints" }, " ", this.constraints(node)) : null));
    if (depth > 4) return box;
    const variants = node.oneOf || node.anyOf;
    if (variants) {
      const list = el("div", { class: "props" });
      for (const variant of variants) {
        const resolved = this.resolve(variant);
        if (resolved.type === "null") continue;
        list.append(el("div", { class: "prop" }, el("strong", {}, "one of: "), this.schema(variant, depth + 1)));
      }
      box.append(list);
      return box;
    }
    let target = node;
    if (String(node.type).includes("array") && node.items) target = this.resolve(node.items);
    const { properties, required, description } = this.flatten(target);
    if (description && depth === 0) box.append(prose(description));
    const names = Object.keys(properties);
    if (names.length) {
      const list = el("div", { class: "props" });
      for (const name of names) {
        const prop = properties[name];
        const resolved = this.resolve(prop);
        const row = el("div", { class: "prop" }, el("code", {}, name), " ",
          el("span", { class: "type" }, this.typeOf(prop)),
          required.has(name) ? el("span", { class: "required" }, " required") : null,
          this.constraints(resolved) ? el("span", { class: "constraints" }, " · ", this.constraints(resolved)) : null);
        const text = prop.description || (prop.$ref ? "" : resolved.description);
        if (text) row.append(prose(text));
        const nested = this.flatten(String(resolved.type).includes("array") && resolved.items ? resolved.items : prop);
        if (Object.keys(nested.properties).length && !prop.$ref) row.append(this.schema(prop, depth + 1));
        list.append(row);
      }
      box.append(list);
    }
    return box;
  }

  example(media) {
    const node = this.resolve(media.schema);
    const value = media.example ?? (media.examples && Object.values(media.examples)[0]?.value) ?? node.example ?? (node.examples || [])[0];
    return value === undefined ? null : el("pre", {}, JSON.stringify(value, null, 2));
  }

  content(content) {
    const box = el("div");
    for (const [type, media] of Object.entries(content || {})) {
      box.append(el("div", { class: "muted" }, type));
      if (media.schema) box.append(this.schema(media.schema));
      const example = this.example(media);
      if (example) box.append(el("h4", {}, "Example"), example);
    }
    return box;
  }

  operation(method, path, op) {
    const id = anchor(op.operationId || `${method}-${path}`);
    const section = el("section", { class: "operation", id },
      el("h3", {}, op.summary || op.operationId || path),
      el("div", { class: "route" }, el("span", { class: `method ${method}` }, method), el("span", {}, path)));
    if (op.description) section.append(prose(op.description));
    const security = (op.security || []).flatMap((requirement) => Object.keys(requirement));
    section.append(el("p", { class: "muted" }, "Authorization: ",
      security.length ? security.map((name, i) => [i ? " or " : "", el("code", {}, name)]) : "none"));
    const params = (op.parameters || []).map((p) => this.resolve(p));
    if (params.length) {
      const table = el("table", {}, el("tr", {}, el("th", {}, "Parameter"), el("th", {}, "In"), el("th", {}, "Type"), el("th", {}, "Description")));
      for (const p of params) {
        table.append(el("tr", {}, el("td", {}, el("code", {}, p.name), p.required ? el("span", { class: "required" }, " required") : null),
          el("td", {}, p.in), el("td", {}, el("span", { class: "type" }, this.typeOf(p.schema))), el("td", {}, prose(p.description))));
      }
      section.append(el("h4", {}, "Parameters"), table);
    }
    if (op.requestBody) {
      const body = this.resolve(op.requestBody);
      section.append(el("h4", {}, `Request body${body.required ? "" : " (optional)"}`), prose(body.description), this.content(body.content));
    }
    const table = el("table", {}, el("tr", {}, el("th", {}, "Status"), el("th", {}, "Answer")));
    for (const [status, response] of Object.entries(op.responses || {})) {
      const answer = this.resolve(response);
      const cell = el("td", {}, prose(answer.description));
      const headers = Object.entries(answer.headers || {});
      if (headers.length) cell.append(el("div", { class: "muted" }, "Headers: ", headers.map(([name], i) => [i ? ", " : "", el("code", {}, name)])));
      // A shared error answer shows its schema's name only; the others in full.
      if (answer.content && response.$ref) {
        for (const media of Object.values(answer.content)) cell.append(el("div", {}, el("span", { class: "type" }, this.typeOf(media.schema))));
      } else if (answer.content) {
        cell.append(this.content(answer.content));
      }
      table.append(el("tr", {}, el("td", { class: "status" }, status), cell));
    }
    section.append(el("h4", {}, "Responses"), table);
    return section;
  }
}

function render(doc) {
  const ref = new Reference(doc);
  const nav = document.getElementById("nav");
  const content = document.getElementById("content");
  nav.replaceChildren();
  content.replaceChildren();
  content.append(el("p", { class: "muted" }, `${doc.info.title} ${doc.info.version} · OpenAPI ${doc.openapi}`), prose(doc.info.description));

  const byTag = new Map((doc.tags || []).map((tag) => [tag.name, { tag, operations: [] }]));
  const add = (source, method, path, op) => {
    const name = (op.tags || ["other"])[0];
    if (!byTag.has(name)) byTag.set(name, { tag: { name }, operations: [] });
    byTag.get(name).operations.push({ source, method, path, op });
  };
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) if (item[method]) add("paths", method, path, item[method]);
  }
  for (const [name, item] of Object.entries(doc.webhooks || {})) {
    for (const method of METHODS) if (item[method]) add("webhooks", method, name, item[method]);
  }

  for (const { tag, operations } of byTag.values()) {
    if (!operations.length) continue;
    nav.append(el("h2", {}, tag.name));
    content.append(el("h2", { class: "tag", id: `tag-${anchor(tag.name)}` }, tag.name), prose(tag.description));
    for (const { method, path, op } of operations) {
      const section = ref.operation(method, path, op);
      nav.append(el("a", { href: `#${section.id}` }, el("span", { class: `method ${method}` }, method), op.summary || path));
      content.append(section);
    }
  }

  const schemes = Object.entries(doc.components?.securitySchemes || {});
  if (schemes.length) {
    nav.append(el("h2", {}, "Authorization"));
    nav.append(el("a", { href: "#authorization" }, "Keys"));
    const table = el("table", {}, el("tr", {}, el("th", {}, "Name"), el("th", {}, "Header"), el("th", {}, "Description")));
    for (const [name, scheme] of schemes) {
      table.append(el("tr", {}, el("td", {}, el("code", {}, name)),
        el("td", {}, el("code", {}, `Authorization: Bearer ${scheme.bearerFormat || "…"}`)), el("td", {}, prose(scheme.description))));
    }
    content.append(el("h2", { class: "tag", id: "authorization" }, "Authorization"), table);
  }
}

fetch("/openapi.json", { headers: { accept: "application/json" } })
  .then((response) => {
    if (!response.ok) throw new Error(`GET /openapi.json answered ${response.status}`);
    return response.json();
  })
  .then(render)
  .catch((error) => {
    document.getElementById("content").replaceChildren(el("p", { class: "error" }, `Could not load the API document: ${error.message}`));
  });
