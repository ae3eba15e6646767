#!/usr/bin/env python3
"""Makes the two rendered forms of network-requirements-2025.md that the tests read
(the page's meaning must come out the same from all three):

- network-requirements-2025.html: the page as Learn serves it. The docs' Markdown
  rendered by markdown-it (CommonMark and tables, as Learn's markdig does), Learn's
  own syntax done as Learn does it (`> [!NOTE]` boxes as <div class="NOTE">, `[!div]`,
  includes), ids and anchor links on headings, code headers with a Copy button, and
  the site around the article: header, navigation, breadcrumbs, a table of contents,
  feedback, footer, and scripts that hold addresses (a reader must skip them).
- network-requirements-2025-learn.md: a Markdown mirror of that rendering (the HTML
  converted back by markdownify, as mirror sites do): `<br />` gone so region labels
  run into the address before them (`4.198.154.86Brazil South: ...`) and names into
  each other (`*.mcas.ms*.admin-mcas.ms`), `-` for an empty header cell, CRLF line
  ends, the mirror's title lines and the site's links around the article.

Run from this directory after `pip install markdown-it-py markdownify`; the outputs
are committed, so the tests need neither.
"""

import re

import markdownify
from markdown_it import MarkdownIt

SOURCE = "network-requirements-2025.md"
URL = "https://learn.microsoft.com/en-us/defender-cloud-apps/network-requirements"
INCLUDE = (
    "Ask questions, get help from Microsoft support, and find answers in the community. "
    "See [Open a support ticket](https://learn.microsoft.com/en-us/defender-cloud-apps/support-and-ts)."
)


def slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def article_html(markdown):
    front = re.match(r"---\n(.*?)\n---\n", markdown, re.S)
    meta = dict(
        line.split(":", 1) for line in front.group(1).splitlines() if ":" in line
    )
    body = markdown[front.end():]
    body = re.sub(r"\[!INCLUDE \[[^\]]*\]\([^)]*\)\]", INCLUDE, body)
    html = MarkdownIt("commonmark").enable("table").render(body)
    # Learn's boxes: a blockquote opening with [!NOTE] is a <div class="NOTE"> titled.
    def alert(m):
        kind = m.group(1)
        return f'<div class="{kind}">\n<p class="alert-title">{kind.title()}</p>\n<p>'
    html = re.sub(r"<blockquote>\s*<p>\[!(NOTE|IMPORTANT|TIP|WARNING|CAUTION)\]\s*", alert, html)
    html = re.sub(r'<blockquote>\s*<p>\[!div class=&quot;([^&]*)&quot;\]\s*', r'<div class="\1">\n<p>', html)
    html = html.replace("</blockquote>", "</div>")
    html = html.replace("<p></p>\n", "")

    def heading(m):
        level, text = m.group(1), m.group(2)
        ident = slug(re.sub(r"<[^>]+>", "", text))
        anchor = f'<a class="anchor-link docon docon-link" href="#{ident}" aria-label="Section titled: {ident}"></a>'
        return f'<h{level} id="{ident}" class="heading-anchor">{anchor}{text}</h{level}>'
    html = re.sub(r"<h([1-6])>(.*?)</h\1>", heading, html)
    code_header = (
        '<div class="codeHeader" id="code-try-{n}" data-bi-name="code-header"><span class="language">{lang}</span>'
        '<button type="button" class="action position-relative" data-bi-name="copy" aria-label="Copy code">'
        '<span class="icon"><span class="docon docon-edit-copy" role="presentation"></span></span>'
        "<span>Copy</span></button></div>\n"
    )
    counter = iter(range(1000))
    html = re.sub(
        r'<pre><code class="language-(\w+)">',
        lambda m: code_header.format(n=next(counter), lang=m.group(1))
        + f'<pre><code class="lang-{m.group(1)}">',
        html,
    )
    html = html.replace("<table>", '<div class="table-wrapper"><table class="table">').replace(
        "</table>", "</table></div>"
    )
    return meta["ms.date"].strip(), meta["title"].strip(), html


def page(date, title, article):
    headings = re.findall(r'<h2 id="([^"]+)"[^>]*>(?:<a[^>]*></a>)?(.*?)</h2>', article)
    toc = "\n".join(f'<li><a href="#{i}">{t}</a></li>' for i, t in headings)
    return f"""<!DOCTYPE html>
<html class="layout layout-holy-grail" lang="en-us" dir="ltr" data-authenticated="false">
<head>
<meta charset="utf-8" />
<meta name="viewport" content="width=device-width, initial-scale=1.0" />
<title>{title} - Microsoft Defender for Cloud Apps | Microsoft Learn</title>
<meta name="description" content="This article describes the IP addresses and ports you need to open to work with Defender for Cloud Apps." />
<meta name="ms.date" content="{date}" />
<meta name="ms.topic" content="reference" />
<meta name="ms.service" content="defender-for-cloud-apps" />
<link rel="canonical" href="{URL}" />
<script>var msDocs = {{"data": {{"userLocale": "en-us", "probe": "13.107.228.0/24", "egress": "192.0.2.77"}}}};</script>
</head>
<body lang="en-us" dir="ltr">
<div class="header-holder has-default-focus">
<a href="#main" class="skip-to-main-link">Skip to main content</a>
<header id="ms--site-header" role="banner">
<nav aria-label="site"><ul><li><a href="https://learn.microsoft.com/en-us/">Learn</a></li><li><a href="https://learn.microsoft.com/en-us/docs/">Documentation</a></li><li><a href="https://learn.microsoft.com/en-us/training/">Training</a></li></ul></nav>
<form class="search" role="search"><input type="search" name="terms" placeholder="Search" /></form>
</header>
</div>
<div class="mainContainer" data-bi-name="body">
<nav id="affixed-left-container" aria-label="Table of contents">
<ul><li><a href="overview">Overview</a></li><li><a href="network-requirements">Network requirements</a></li><li><a href="best-practices">Best practices</a></li></ul>
</nav>
<main id="main" role="main" class="content" data-bi-name="content" lang="en-us" dir="ltr">
<nav id="article-header-breadcrumbs" aria-label="Breadcrumb"><ol><li><a href="/en-us/">Learn</a></li><li><a href="/en-us/defender-cloud-apps/">Microsoft Defender for Cloud Apps</a></li></ol></nav>
<div class="article-header"><ul class="metadata page-metadata"><li class="visually-hidden">Note</li><li><time class="is-invisible" data-article-date aria-label="Article review date" datetime="2025-04-22T08:00:00Z">04/22/2025</time></li></ul></div>
<aside id="ms--in-this-article" aria-label="In this article"><h3>In this article</h3><ol>
{toc}
</ol></aside>
<div class="content">
{article}
</div>
<script type="application/ld+json">{{"@type": "TechArticle", "sample": "198.51.100.250"}}</script>
<div id="ms--feedback" class="feedback-section"><h2 id="feedback">Feedback</h2><p>Was this page helpful?</p><button type="button">Yes</button><button type="button">No</button></div>
</main>
</div>
<footer id="footer" data-bi-name="footer" role="contentinfo"><ul><li><a href="https://learn.microsoft.com/en-us/previous-versions/">Previous Versions</a></li><li>&copy; Microsoft 2025</li></ul></footer>
<script src="/_themes/docs.theme/master/en-us/_themes/global/deprecation.js"></script>
</body>
</html>
"""


def mirror(title, article):
    """Markdown of the rendered article, as a mirror makes it from the page."""
    # The mirror drops line breaks inside table cells without a separator.
    html = re.sub(r"<br\s*/?>", "", article)
    # ...and the anchor links, the code headers and the wrappers are only chrome.
    html = re.sub(r'<a class="anchor-link[^>]*></a>', "", html)
    html = re.sub(r'<div class="codeHeader".*?</div>\n', "", html)
    text = markdownify.markdownify(html, heading_style="ATX", bullets="-", code_language_callback=lambda el: "ini")
    # An empty header cell is written `-`, as Learn's Markdown view shows it.
    text = re.sub(r"^\|\s*\|", "| - |", text, flags=re.M)
    text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    chrome = (
        f"Title: {title} - Microsoft Defender for Cloud Apps | Microsoft Learn\n\n"
        f"URL Source: {URL}\n\n"
        "Markdown Content:\n"
        "[Skip to main content](#main)\n\n"
        "- [Learn](https://learn.microsoft.com/en-us/)\n"
        "- [Documentation](https://learn.microsoft.com/en-us/docs/)\n\n"
    )
    footer = "\n## Feedback\n\nWas this page helpful?\n\n- [Previous Versions](https://learn.microsoft.com/en-us/previous-versions/)\n- © Microsoft 2025\n"
    return (chrome + text + footer).replace("\n", "\r\n")


def main():
    with open(SOURCE, encoding="utf-8") as f:
        markdown = f.read()
    date, title, article = article_html(markdown)
    with open("network-requirements-2025.html", "w", encoding="utf-8") as f:
        f.write(page(date, title, article))
    with open("network-requirements-2025-learn.md", "w", encoding="utf-8", newline="") as f:
        f.write(mirror(title, article))


if __name__ == "__main__":
    main()
