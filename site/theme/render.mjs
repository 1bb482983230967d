// physeg offline MyST site renderer.
//
// `myst build --html` runs this script (template.yml: build.render) from this
// folder with two environment variables:
//   CONTENT_CDN      URL of the MyST content server (config.json, content/<slug>.json, public files)
//   BUILD_DIRECTORY  folder to write the static site into (<project>/_build/html)
//
// It turns every page's MyST AST (mdast) into one static HTML file with a
// navigation sidebar. A page reads like a paper: the code of cells tagged
// `hide-input` (MyST 1.11 marks their code node `visibility: "hide"`) and of
// papermill's parameter cells is folded in <details>, outputs stay visible;
// the runner's provenance cell (tag `provenance`) is shown under the title;
// stderr stream outputs are reported as problems (kind `stderr-output`). Everything the pages need (KaTeX CSS and fonts, the
// stylesheet, figures, notebook downloads) is written next to them, and every
// link is relative, so the folder works from any static file server under any
// path, and from file://. Nothing here touches the network beyond CONTENT_CDN.
//
// Besides the pages it writes `site-manifest.json` (pages, their sources, and
// the problems found while rendering, e.g. equations KaTeX could not typeset);
// physeg.reproduce.site_build reads it to check the build.
//
// Modules: common.mjs (content server, problems, text helpers, copied files),
// outputs.mjs (notebook outputs and equations), this file (links, folding,
// page template, main).

import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { mystToHast } from 'myst-to-html';
import { toHtml } from 'hast-util-to-html';
import { CDN, OUT, copyPublic, escapeHtml, fetchJson, problem, problems } from './common.mjs';
import { renderMath, renderOutputNode } from './outputs.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

// ------------------------------------------------------------ page routing

let pageFiles = new Map(); // slug -> file name

function pageFile(slug) {
  return slug === indexSlug ? 'index.html' : `${slug}.html`;
}
let indexSlug = 'index';

/** Rewrite a site-absolute URL (`/slug#id`, `/file.png`) to a relative href. */
async function relativeHref(url, page) {
  if (!url) return url;
  if (/^[a-z][a-z0-9+.-]*:/i.test(url) || url.startsWith('//')) return url; // external
  if (url.startsWith('#')) return url;
  if (!url.startsWith('/')) {
    // MyST leaves a link to a notebook/page it does not know as it was written
    if (/\.(ipynb|md)(#.*)?$/i.test(url)) problem(page, 'broken-link', `link to a page that is not in the site: ${url}`);
    return url;
  }
  const [pathPart, ...hashParts] = url.split('#');
  const hash = hashParts.length ? `#${hashParts.join('#')}` : '';
  const slug = pathPart.replace(/^\/+|\/+$/g, '');
  if (slug === '') return `index.html${hash}`;
  if (pageFiles.has(slug)) return `${pageFiles.get(slug)}${hash}`;
  if (/\.[A-Za-z0-9]+$/.test(slug)) return (await copyPublic(pathPart, page)) + hash;
  problem(page, 'broken-link', `no page for internal link ${url}`);
  return `${slug}.html${hash}`;
}

// ------------------------------------------------------------ mdast preparation

/**
 * Walk the page AST: drop removed nodes, wrap hidden ones in <details>,
 * replace math and outputs by raw HTML, make URLs relative and copy files.
 */
async function prepare(node, page) {
  if (!node || typeof node !== 'object') return node;
  if (node.visibility === 'remove') return null;
  if (node.html_id) node.identifier = node.html_id; // the anchor ids MyST links to
  foldParameterCell(node);

  switch (node.type) {
    case 'math':
    case 'inlineMath':
      return { type: 'html', value: renderMath(node, page) };
    case 'output':
      return { type: 'html', value: await renderOutputNode(node, page) };
    case 'link':
    case 'linkBlock':
    case 'crossReference':
      if (node.url) node.url = await relativeHref(node.url, page);
      break;
    case 'image':
      if (node.url) node.url = await relativeHref(node.url, page);
      delete node.urlOptimized;
      break;
    default:
      break;
  }
  if (Array.isArray(node.children)) {
    const kids = [];
    for (const child of node.children) {
      const done = await prepare(child, page);
      if (done) kids.push(done);
    }
    node.children = kids;
  }
  if (node.visibility === 'hide') {
    // MyST (1.11) turns the cell tags hide-input / hide-output / hide-cell into
    // `visibility: "hide"` on the code, outputs or block node: folded, one click away
    const label = node.foldLabel || (node.type === 'outputs' || node.type === 'output' ? 'Show output' : 'Show code');
    const inner = { ...node };
    delete inner.visibility;
    delete inner.foldLabel;
    return {
      type: 'details',
      kind: node.type === 'code' ? 'code' : 'output',
      children: [{ type: 'summary', children: [{ type: 'text', value: label }] }, inner],
    };
  }
  return node;
}

/** Captions for the cells papermill marks (the notebook's defaults, and this run's values). */
const CELL_LABELS = {
  parameters: 'Parameters (notebook defaults)',
  'injected-parameters': 'Parameters of this run (injected by papermill)',
};

function cellTags(node) {
  return Array.isArray(node.data?.tags) ? node.data.tags.map(String) : [];
}

/** Papermill's parameter cells are boilerplate: fold their code under their caption. */
function foldParameterCell(node) {
  if (node.type !== 'block') return;
  const label = cellTags(node).map((tag) => CELL_LABELS[tag]).find(Boolean);
  if (!label) return;
  for (const child of node.children || []) {
    if (child.type === 'code' && child.visibility !== 'remove') {
      child.visibility = 'hide';
      child.foldLabel = label;
    }
  }
}

/** Take the provenance header cell(s) (tag `provenance`, written by the runner) out of the page body. */
function liftProvenance(tree) {
  const lifted = [];
  tree.children = (tree.children || []).filter((child) => {
    const isHeader = child.type === 'block' && cellTags(child).includes('provenance');
    if (isHeader) lifted.push(child);
    return !isHeader;
  });
  return lifted;
}

// Handlers for mdast-util-to-hast 12 (the version myst-to-html 1.7.3 uses):
// `h(node, tagName, props, children)` builds an element, `h.all(node)` the children.
const handlers = {
  details: (h, node) => h(node, 'details', { className: ['toggle', `fold-${node.kind || 'code'}`] }, h.all(node)),
  summary: (h, node) => h(node, 'summary', {}, h.all(node)),
  heading: (h, node) => h(node, `h${node.depth}`, { id: node.identifier || undefined }, h.all(node)),
  block: (h, node) => {
    const classes = ['block'];
    if (node.kind) classes.push(node.kind);
    for (const tag of cellTags(node)) classes.push(`tag-${tag.replace(/[^A-Za-z0-9_-]/g, '_')}`);
    return h(node, 'div', { className: classes, id: node.identifier || undefined }, h.all(node));
  },
  outputs: (h, node) => h(node, 'div', { className: ['outputs'] }, h.all(node)),
  crossReference: (h, node) => {
    const href = node.url ? node.url : `#${node.identifier}`;
    const target = node.url && node.identifier && !node.url.includes('#') ? `${href}#${node.identifier}` : href;
    return h(node, 'a', { href: target, className: ['xref'] }, h.all(node));
  },
  cite: (h, node) => {
    const kids = h.all(node);
    return h(node, 'span', { className: ['cite'] }, kids.length ? kids : [{ type: 'text', value: node.label || node.identifier || '' }]);
  },
  citeGroup: (h, node) => h(node, 'span', { className: ['cite-group'] }, h.all(node)),
  footnoteReference: (h, node) =>
    h(node, 'sup', { className: ['footnote-ref'] }, [
      h(node, 'a', { href: `#fn-${node.identifier}` }, [{ type: 'text', value: String(node.enumerator || node.label || node.identifier) }]),
    ]),
  footnoteDefinition: (h, node) =>
    h(node, 'div', { className: ['footnote'], id: `fn-${node.identifier}` }, [
      h(node, 'span', { className: ['footnote-label'] }, [{ type: 'text', value: `${node.enumerator || node.label || node.identifier}. ` }]),
      ...h.all(node),
    ]),
};

const toHast = mystToHast({ allowDangerousHtml: true, handlers });

function mdastToHtml(tree) {
  return toHtml(toHast(tree), { allowDangerousHtml: true });
}

// ------------------------------------------------------------ page template

function navHtml(nav, currentSlug) {
  const items = nav.map((entry) => {
    const level = Math.max(1, Math.min(4, entry.level || 1));
    if (!entry.slug) return `<li class="nav-section level-${level}">${escapeHtml(entry.title)}</li>`;
    const current = entry.slug === currentSlug;
    return `<li class="level-${level}${current ? ' current' : ''}"><a href="${escapeHtml(pageFile(entry.slug))}"${current ? ' aria-current="page"' : ''}>${escapeHtml(entry.title || entry.slug)}</a></li>`;
  });
  return `<ol class="nav-pages">\n${items.join('\n')}\n</ol>`;
}

function pageHtml({ siteTitle, nav, slug, frontmatter, provenance, body, downloads, prev, next }) {
  const title = frontmatter.title || slug;
  const heading = frontmatter.content_includes_title ? '' : `<h1 class="page-title">${escapeHtml(title)}</h1>`;
  const subtitle = frontmatter.subtitle ? `<p class="subtitle">${escapeHtml(frontmatter.subtitle)}</p>` : '';
  const dl = downloads.length
    ? `<p class="downloads">${downloads.map((d) => `<a class="download" href="${escapeHtml(d.href)}" download>${escapeHtml(d.label)}</a>`).join(' ')}</p>`
    : '';
  const pager = [
    prev ? `<a class="prev" rel="prev" href="${escapeHtml(pageFile(prev.slug))}">&larr; ${escapeHtml(prev.title)}</a>` : '<span></span>',
    next ? `<a class="next" rel="next" href="${escapeHtml(pageFile(next.slug))}">${escapeHtml(next.title)} &rarr;</a>` : '<span></span>',
  ].join('\n');
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)} · ${escapeHtml(siteTitle)}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="_static/katex/katex.min.css">
<link rel="stylesheet" href="_static/physeg.css">
</head>
<body>
<nav class="sidebar" aria-label="Pages">
<p class="site-title"><a href="index.html">${escapeHtml(siteTitle)}</a></p>
${navHtml(nav, slug)}
</nav>
<main class="content">
<article>
${heading}
${subtitle}
${provenance ? `<aside class="provenance" aria-label="What produced this page">${provenance}</aside>` : ''}
${dl}
${body}
</article>
<nav class="pager" aria-label="Previous and next page">
${pager}
</nav>
<footer>Built with MyST (mystmd) from the executed notebooks; rendered offline by the physeg site template.</footer>
</main>
</body>
</html>
`;
}

// ------------------------------------------------------------ main

async function copyDir(from, to, filter = () => true) {
  await fs.mkdir(to, { recursive: true });
  for (const entry of await fs.readdir(from, { withFileTypes: true })) {
    const src = path.join(from, entry.name);
    const dst = path.join(to, entry.name);
    if (entry.isDirectory()) await copyDir(src, dst, filter);
    else if (filter(entry.name)) await fs.copyFile(src, dst);
  }
}

async function main() {
  if (!CDN || !OUT) throw new Error('CONTENT_CDN and BUILD_DIRECTORY must be set (this script is run by `myst build --html`)');
  if (path.basename(OUT) !== 'html') throw new Error(`refusing to write into unexpected BUILD_DIRECTORY ${OUT}`);
  await fs.rm(OUT, { recursive: true, force: true });
  await fs.mkdir(path.join(OUT, 'files'), { recursive: true });

  // static assets: KaTeX (CSS + fonts) and our stylesheet
  const katexDist = path.dirname(require.resolve('katex/dist/katex.min.css'));
  await fs.mkdir(path.join(OUT, '_static', 'katex'), { recursive: true });
  await fs.copyFile(path.join(katexDist, 'katex.min.css'), path.join(OUT, '_static', 'katex', 'katex.min.css'));
  await copyDir(path.join(katexDist, 'fonts'), path.join(OUT, '_static', 'katex', 'fonts'));
  await fs.copyFile(path.join(HERE, 'static', 'physeg.css'), path.join(OUT, '_static', 'physeg.css'));

  const config = await fetchJson('/config.json');
  const project = (config.projects || [])[0];
  if (!project) throw new Error('the MyST site config has no project');
  indexSlug = project.index || 'index';
  const index = await fetchJson(`/content/${indexSlug}.json`);
  const siteTitle = config.title || project.title || 'physeg';

  // navigation: the index page first, then the toc pages in order
  const nav = [
    { slug: indexSlug, title: index.frontmatter?.title || project.title || 'Overview', level: 1 },
    ...(project.pages || []).map((p) => ({ slug: p.slug, title: p.title, level: p.level })),
  ];
  const pages = nav.filter((entry) => entry.slug);
  pageFiles = new Map(pages.map((p) => [p.slug, pageFile(p.slug)]));

  const manifest = { site_title: siteTitle, myst: config.myst, index: 'index.html', pages: [], problems };
  for (const [i, entry] of pages.entries()) {
    const data = entry.slug === indexSlug ? index : await fetchJson(`/content/${entry.slug}.json`);
    const frontmatter = data.frontmatter || {};
    const tree = await prepare(data.mdast, entry.slug);
    const header = liftProvenance(tree);
    const provenance = header.length ? mdastToHtml({ type: 'root', children: header }) : '';
    const body = mdastToHtml(tree);
    const downloads = [];
    for (const exp of frontmatter.exports || []) {
      if (exp.url && exp.format === 'ipynb') {
        downloads.push({ label: `Download ${exp.filename || 'notebook'}`, href: await relativeHref(exp.url, entry.slug) });
      }
    }
    const html = pageHtml({
      siteTitle,
      nav,
      slug: entry.slug,
      frontmatter: { ...frontmatter, title: frontmatter.title || entry.title },
      provenance,
      body,
      downloads,
      prev: pages[i - 1],
      next: pages[i + 1],
    });
    const file = pageFile(entry.slug);
    await fs.writeFile(path.join(OUT, file), html);
    manifest.pages.push({ slug: entry.slug, file, title: frontmatter.title || entry.title, source: data.location || null });
  }
  await fs.writeFile(path.join(OUT, 'site-manifest.json'), JSON.stringify(manifest, null, 2));
  console.error(`physeg-site: wrote ${pages.length} pages to ${OUT} (${problems.length} problem(s))`);
}

main().catch((err) => {
  console.error(`physeg-site: render failed: ${err.stack || err}`);
  process.exit(1);
});
