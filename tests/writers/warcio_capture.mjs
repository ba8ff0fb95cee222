// Crawl URLs into a WARC the way browsertrix-crawler writes one, with the same library
// (webrecorder's warcio.js): WARC/1.1, a gzip member per record, request + response pairs with
// the HTTP headers as received, and per page a `urn:text:` resource (the page's text) and a
// `urn:pageinfo:` JSON resource. Usage: node warcio_capture.mjs OUT.warc.gz URL...
import fs from "node:fs";
import { WARCRecord, WARCSerializer } from "warcio";

const [out, ...urls] = process.argv.slice(2);
const warcVersion = "WARC/1.1";
const handle = fs.openSync(out, "w");
const write = async (record) => fs.writeSync(handle, await WARCSerializer.serialize(record, { gzip: true }));
const bytes = async function* (data) { yield data; };

await write(await WARCRecord.createWARCInfo({ filename: out, warcVersion },
  { software: "warcio.js (curation test writer)", format: "WARC File Format 1.1" }));
for (const url of urls) {
  const date = new Date().toISOString();
  const response = await fetch(url, { redirect: "manual" });
  const body = new Uint8Array(await response.arrayBuffer());
  const httpHeaders = Object.fromEntries(response.headers);
  const target = new URL(url);
  await write(await WARCRecord.create({ url, date, type: "request", warcVersion,
    statusline: `GET ${target.pathname}${target.search} HTTP/1.1`,
    httpHeaders: { Host: target.host, "User-Agent": "warcio.js test crawler" } }, bytes(new Uint8Array())));
  await write(await WARCRecord.create({ url, date, type: "response", warcVersion,
    statusline: `HTTP/1.1 ${response.status} ${response.statusText}`, httpHeaders }, bytes(body)));
  if (response.status === 200) {
    const text = new TextDecoder().decode(body).replace(/<[^>]*>/g, " ");
    await write(await WARCRecord.create({ url: `urn:text:${url}`, date, type: "resource", warcVersion,
      warcHeaders: { "Content-Type": "text/plain; charset=utf-8" } }, bytes(new TextEncoder().encode(text))));
    await write(await WARCRecord.create({ url: `urn:pageinfo:${url}`, date, type: "resource", warcVersion,
      warcHeaders: { "Content-Type": "application/json" } },
      bytes(new TextEncoder().encode(JSON.stringify({ pages: { url, status: response.status } })))));
  }
}
fs.closeSync(handle);
