"""A seeded generator of a small, realistic demo crawl, written as real WARC files.

No crawl can be downloaded offline, so the default pipeline runs on this. English prose comes
from the CPython documentation that ships with Python (``pydoc_data.topics``); other languages
from short built-in passages. The mix exercises every stage: boilerplate around main content,
exact and near duplicates, keyword spam, link farms, short pages, non-English pages, URLs on
the blocklist, and non-HTML payloads. Same seed, same bytes.
"""

from __future__ import annotations

import html
import io
import random
import re
from dataclasses import dataclass

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

_FOREIGN = {
    "de": [
        "Die Stadt liegt an einem breiten Fluss und ist seit dem Mittelalter ein wichtiger Handelsort.",
        "Im Sommer besuchen viele Reisende die alten Kirchen, die Museen und den großen Marktplatz.",
        "Die Bewohner sprechen gern über das Wetter, die Politik und den örtlichen Fußballverein.",
        "Nach dem Krieg wurde die Altstadt sorgfältig wieder aufgebaut und unter Denkmalschutz gestellt.",
        "Die Universität gehört zu den ältesten des Landes und zieht Studierende aus aller Welt an.",
        "Wer mit dem Zug anreist, erreicht das Zentrum vom Hauptbahnhof aus in wenigen Minuten zu Fuß.",
        "Die regionale Küche ist bekannt für deftige Eintöpfe, frisches Brot und verschiedene Käsesorten.",
        "Im Winter finden auf dem Platz vor dem Rathaus ein Weihnachtsmarkt und mehrere Konzerte statt.",
    ],
    "fr": [
        "La ville se trouve au bord d'un large fleuve et fut longtemps un carrefour commercial important.",
        "Chaque été, de nombreux visiteurs découvrent les églises anciennes, les musées et le grand marché.",
        "Les habitants aiment discuter du temps qu'il fait, de la politique et de leur club de football.",
        "Après la guerre, la vieille ville a été reconstruite avec soin et classée monument historique.",
        "L'université compte parmi les plus anciennes du pays et attire des étudiants du monde entier.",
        "Depuis la gare centrale, il suffit de quelques minutes à pied pour rejoindre le centre-ville.",
        "La cuisine régionale est réputée pour ses plats mijotés, son pain frais et ses nombreux fromages.",
        "En hiver, la place de l'hôtel de ville accueille un marché de Noël et plusieurs concerts.",
    ],
    "es": [
        "La ciudad se encuentra a orillas de un ancho río y fue durante siglos un importante centro comercial.",
        "Cada verano muchos viajeros visitan las iglesias antiguas, los museos y la gran plaza del mercado.",
        "A los habitantes les gusta hablar del tiempo, de la política y de su equipo de fútbol local.",
        "Después de la guerra, el casco antiguo fue reconstruido con cuidado y declarado monumento.",
        "La universidad es una de las más antiguas del país y atrae a estudiantes de todo el mundo.",
        "Desde la estación central se llega al centro de la ciudad en pocos minutos caminando.",
        "La cocina regional es famosa por sus guisos, su pan recién hecho y sus numerosos quesos.",
        "En invierno, la plaza del ayuntamiento acoge un mercado navideño y varios conciertos.",
    ],
}

_SPAM_WORDS = ["cheap", "pills", "casino", "bonus", "free", "win", "crypto", "deal", "discount", "buy now"]
_BLOCKED_HOSTS = ["xxx-porn-videos.example", "free-sex-cams.example"]
_NAV = ["Home", "About", "Products", "Blog", "Contact", "Careers", "Support", "Login"]


@dataclass(frozen=True)
class DemoCrawlConfig:
    pages: int = 2400
    files: int = 4
    seed: int = 1234
    crawl: str = "CC-MAIN-DEMO-2026"
    # pad every HTML page with the markup real pages carry around their text (inline scripts,
    # styles, menus, footer links, JSON-LD) to about this many bytes; 0 keeps the compact pages
    page_bytes: int = 0


def _english_paragraphs() -> list[str]:
    from pydoc_data.topics import topics

    paragraphs = []
    for text in topics.values():
        for block in text.split("\n\n"):
            if block.startswith(" ") or len(block.split()) < 30:
                continue  # code samples and grammar snippets, not prose
            paragraphs.append(re.sub(r"\s+", " ", block).strip())
    return sorted(set(paragraphs))


class _Prose:
    """New English paragraphs from a word chain (order 2) over the Python reference's prose. Pages
    made of the reference's own paragraphs would share whole paragraphs by the hundred, which real
    articles do not (paragraph dedup would rightly remove most of them); chained text repeats
    about one word 13-gram in six, as prose on shared topics does."""

    START = ("", "")

    def __init__(self, paragraphs: list[str]):
        self.next_words: dict[tuple[str, str], list[str]] = {}
        for paragraph in paragraphs:
            words = [*self.START, *paragraph.split(), ""]
            for i in range(len(words) - 2):
                self.next_words.setdefault((words[i], words[i + 1]), []).append(words[i + 2])

    def paragraph(self, rng: random.Random, min_words: int = 40, max_words: int = 120) -> str:
        words: list[str] = []
        state = self.START
        while len(words) < max_words:
            word = rng.choice(self.next_words[state])
            if not word:  # the end of a source paragraph: stop here if long enough, else go on
                if len(words) >= min_words:
                    break
                state = self.START
                continue
            words.append(word)
            state = (state[1], word)
            if len(words) >= min_words and word.endswith(".") and rng.random() < 0.3:
                break
        return " ".join(words)


def _wrap_page(title: str, body_html: str, rng: random.Random) -> str:
    nav = "".join(f'<li><a href="/{n.lower()}">{n}</a></li>' for n in rng.sample(_NAV, 6))
    footer = (
        f"<footer><p>Copyright {rng.randint(2005, 2025)} Example Media. All rights reserved.</p>"
        '<p><a href="/privacy">Privacy policy</a> | <a href="/terms">Terms of use</a></p>'
        "<p>This site uses cookies to improve your experience.</p></footer>"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
        "<script>var tracking = {id: 42};</script><style>body{font-family:sans-serif}</style></head>"
        f"<body><header><nav><ul>{nav}</ul></nav></header><main><article><h1>{html.escape(title)}</h1>"
        f"{body_html}</article></main><aside><h3>Related</h3><ul><li><a href=\"/a\">More stories</a></li>"
        f"</ul></aside>{footer}</body></html>"
    )


def _paragraphs_html(paragraphs: list[str]) -> str:
    return "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)


def _mutate(text: str, rate: float, rng: random.Random) -> str:
    words = text.split(" ")
    for i in range(len(words)):
        if rng.random() < rate:
            words[i] = rng.choice(["quickly", "also", "the", "system", "value", "often", "new"])
    return " ".join(words)


_JS_WORDS = ["function", "var", "return", "window", "document", "push", "length", "config", "event", "track",
             "if", "else", "null", "true", "this", "data", "render", "init", "node", "style"]


def _furniture_blocks(rng: random.Random, count: int = 800) -> list[tuple[bool, bytes]]:
    """(goes in the head, markup) blocks of the kinds that make real pages ~10-30x larger than their
    text: inline scripts, styles, JSON-LD, menus and link lists; random enough that gzip shrinks
    them about as much as real markup. Pages draw from one pool, as a site's pages share a template."""
    blocks = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.45:
            body = ";".join(f"{rng.choice(_JS_WORDS)}.{rng.choice(_JS_WORDS)}_{rng.getrandbits(24):x}"
                            f"({rng.randint(0, 99999)},'{rng.getrandbits(40):x}')" for _ in range(40))
            blocks.append((True, f"<script>{body}</script>"))
        elif kind < 0.65:
            body = "".join(f".c{rng.getrandbits(20):x}{{margin:{rng.randint(0, 40)}px;color:#{rng.getrandbits(24):06x}}}"
                           for _ in range(40))
            blocks.append((True, f"<style>{body}</style>"))
        elif kind < 0.9:
            links = "".join(f'<li><a href="/{rng.choice(_NAV).lower()}/{rng.getrandbits(32):x}">{rng.choice(_NAV)} '
                            f'{rng.randint(1, 999)}</a></li>' for _ in range(30))
            blocks.append((False, f'<div class="menu m{rng.getrandbits(16):x}"><ul>{links}</ul></div>'))
        else:
            blocks.append((True, '<script type="application/ld+json">{"@type":"WebPage","id":"'
                                 f'{rng.getrandbits(64):x}","datePublished":"20{rng.randint(10, 25)}-0{rng.randint(1, 9)}"}}</script>'))
    return [(in_head, markup.encode()) for in_head, markup in blocks]


def _furnish(payload: bytes, target: int, blocks: list[tuple[bool, bytes]], rng: random.Random) -> bytes:
    """The page with blocks drawn from the pool added until it is about ``target`` bytes."""
    if len(payload) >= target or b"</head>" not in payload:
        return payload
    head, tail, size = [], [], len(payload)
    while size < target:
        in_head, markup = blocks[rng.randrange(len(blocks))]
        (head if in_head else tail).append(markup)
        size += len(markup)
    return payload.replace(b"</head>", b"".join(head) + b"</head>", 1).replace(b"</body>", b"".join(tail) + b"</body>", 1)


class DemoCrawl:
    """Generates pages; ``write(dir)`` writes ``files`` gzipped WARC files of response records."""

    def __init__(self, config: DemoCrawlConfig | None = None):
        self.config = config or DemoCrawlConfig()

    def pages(self) -> list[tuple[str, str, bytes]]:
        """(url, content type, payload) for every page, in crawl order."""
        rng = random.Random(self.config.seed)
        prose = _Prose(_english_paragraphs())
        articles: list[tuple[str, list[str]]] = []
        out: list[tuple[str, str, bytes]] = []
        kinds = ["article"] * 55 + ["near_dup"] * 8 + ["exact_dup"] * 5 + ["spam"] * 7 + ["short"] * 5
        kinds += ["foreign"] * 12 + ["link_farm"] * 4 + ["non_html"] * 3 + ["blocked"] * 1
        for n in range(self.config.pages):
            kind = rng.choice(kinds) if articles else "article"
            host = f"site{rng.randint(1, 400)}.example.com"
            url = f"https://{host}/{kind.replace('_', '-')}/{n}"
            if kind == "article":
                paragraphs = [prose.paragraph(rng) for _ in range(rng.randint(3, 8))]
                title = " ".join(paragraphs[0].split()[:6]).rstrip(",.;:")
                articles.append((title, paragraphs))
                out.append((url, "text/html; charset=utf-8", _wrap_page(title, _paragraphs_html(paragraphs), rng).encode()))
            elif kind in ("near_dup", "exact_dup"):
                title, paragraphs = rng.choice(articles)
                if kind == "near_dup":
                    paragraphs = [_mutate(p, rng.uniform(0.01, 0.08), rng) for p in paragraphs]
                out.append((url, "text/html; charset=utf-8", _wrap_page(title, _paragraphs_html(paragraphs), rng).encode()))
            elif kind == "spam":
                words = [rng.choice(_SPAM_WORDS) for _ in range(rng.randint(80, 300))]
                body = "<p>" + " ".join(words) + "</p>" + "<p>BUY NOW!!! $$$ >>> CLICK HERE <<<</p>" * rng.randint(3, 10)
                out.append((url, "text/html", _wrap_page("Best deals", body, rng).encode()))
            elif kind == "short":
                out.append((url, "text/html", _wrap_page("Not found", "<p>404. Page not found.</p>", rng).encode()))
            elif kind == "foreign":
                lang = rng.choice(sorted(_FOREIGN))
                sentences = [rng.choice(_FOREIGN[lang]) for _ in range(rng.randint(8, 20))]
                paragraphs = [" ".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4)]
                charset = "utf-8" if rng.random() < 0.7 else "iso-8859-1"
                page = _wrap_page(sentences[0][:40], _paragraphs_html(paragraphs), rng)
                page = page.replace('charset="utf-8"', f'charset="{charset}"')
                out.append((url.replace(".example.com", f".example.{lang}"), f"text/html; charset={charset}",
                            page.encode(charset, errors="replace")))
            elif kind == "link_farm":
                items = "".join(f'<li><a href="/p{i}">• Link {i} ...</a></li>' for i in range(rng.randint(40, 120)))
                out.append((url, "text/html", _wrap_page("Links", f"<ul>{items}</ul>", rng).encode()))
            elif kind == "non_html":
                if rng.random() < 0.5:
                    payload = b"\x89PNG\r\n\x1a\n" + bytes(rng.getrandbits(8) for _ in range(600))
                    out.append((url + ".png", "image/png", payload))
                else:
                    out.append((url + ".pdf", "application/pdf", b"%PDF-1.4\n" + bytes(rng.getrandbits(8) for _ in range(800))))
            else:  # blocked
                title, paragraphs = rng.choice(articles)
                out.append((f"https://{rng.choice(_BLOCKED_HOSTS)}/video/{n}", "text/html",
                            _wrap_page(title, _paragraphs_html(paragraphs), rng).encode()))
        return out

    def file_name(self, index: int) -> str:
        return f"{self.config.crawl}-{index:05d}.warc.gz"

    def warc_file(self, index: int, pages: list[tuple[str, str, bytes]] | None = None) -> bytes:
        """The gzipped WARC bytes of output file ``index`` (``pages``: from ``pages()``, to share)."""
        pages = self.pages() if pages is None else pages
        per_file = -(-len(pages) // self.config.files)
        # furniture has its own random stream per file: page_bytes 0 writes the same bytes, and
        # files can be built in parallel
        furniture = random.Random((self.config.seed + 1) * 1_000_003 + index)
        blocks = _furniture_blocks(random.Random(self.config.seed + 1)) if self.config.page_bytes else []
        buffer = io.BytesIO()
        writer = WARCWriter(buffer, gzip=True)
        for offset, (url, content_type, payload) in enumerate(pages[index * per_file : (index + 1) * per_file]):
            if self.config.page_bytes and content_type.startswith("text/html"):
                payload = _furnish(payload, self.config.page_bytes, blocks, furniture)
            seconds = (index * per_file + offset) % 60
            http_headers = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
            record = writer.create_warc_record(
                url, "response", payload=io.BytesIO(payload), http_headers=http_headers,
                warc_headers_dict={
                    "WARC-Date": f"2026-01-0{1 + index}T12:00:{seconds:02d}Z",
                    "WARC-Record-ID": f"<urn:uuid:00000000-0000-4000-8000-{index * per_file + offset:012d}>",
                },
            )
            writer.write_record(record)
        return buffer.getvalue()

    def warc_files(self) -> list[tuple[str, bytes]]:
        """(file name, gzipped WARC bytes) per output file."""
        pages = self.pages()
        return [(self.file_name(index), self.warc_file(index, pages)) for index in range(self.config.files)]

    def write(self, directory: str, files: list[int] | None = None) -> list[str]:
        """Write the crawl's files (or those of ``files``) under ``directory``; existing ones are kept."""
        from curation.core import io as fio

        paths, pages = [], None
        for index in range(self.config.files) if files is None else files:
            path = fio.join(directory, self.file_name(index))
            if not fio.exists(path):
                pages = self.pages() if pages is None else pages
                fio.write_atomic(path, self.warc_file(index, pages))
            paths.append(path)
        return paths
