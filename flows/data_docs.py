"""Data Docs that work offline: GE's CDN scripts and styles are served from the site itself."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from flows.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

# Shared by every lake and test; gx/uncommitted is build output (not committed).
VENDOR_CACHE = PROJECT_ROOT / "expectations" / "gx" / "uncommitted" / "vendor"
# The URLs GE 1.x's Data Docs templates load, and the npm package file each one is.
ASSETS: dict[str, tuple[str, str]] = {
    "https://code.jquery.com/jquery-3.7.1.min.js": ("jquery@3.7.1", "dist/jquery.min.js"),
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": (
        "popper.js@1.12.9",
        "dist/umd/popper.min.js",
    ),
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": (
        "bootstrap@4.3.1",
        "dist/js/bootstrap.min.js",
    ),
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": (
        "bootstrap@4.3.1",
        "dist/css/bootstrap.min.css",
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": (
        "bootstrap-table@1.19.1",
        "dist/bootstrap-table.min.js",
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": (
        "bootstrap-table@1.19.1",
        "dist/bootstrap-table.min.css",
    ),
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": (
        "bootstrap-table@1.19.1",
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.js",
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": (
        "bootstrap-table@1.19.0",
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.css",
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": (
        "bootstrap-table@1.19.0",
        "dist/extensions/filter-control/bootstrap-table-filter-control.css",
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": (
        "bootstrap-datepicker@1.9.0",
        "dist/js/bootstrap-datepicker.min.js",
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": (
        "bootstrap-datepicker@1.9.0",
        "dist/css/bootstrap-datepicker.min.css",
    ),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": (
        "@forevolve/bootstrap-dark@1.1.0",
        "dist/css/bootstrap-prefers-dark.css",
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "@fortawesome/fontawesome-free@6.6.0",
        "css/all.min.css",
    ),
    "https://cdn.jsdelivr.net/npm/vega@5": ("vega@5.33.1", "build/vega.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-lite@5": ("vega-lite@5.23.0", "build/vega-lite.min.js"),
    "https://cdn.jsdelivr.net/npm/vega-embed@6": ("vega-embed@6.29.0", "build/vega-embed.min.js"),
}
# Files a stylesheet loads by relative path (Font Awesome's ../webfonts/).
EXTRA_FILES = {
    "@fortawesome/fontawesome-free@6.6.0": [
        f"webfonts/fa-{name}.{ext}"
        for name in ("brands-400", "regular-400", "solid-900", "v4compatibility")
        for ext in ("woff2", "ttf")
    ]
}


WEB_ASSET = re.compile(
    r'"https://great-expectations-web-assets\.s3\.[^/"]+\.amazonaws\.com/([\w.-]+)(?:\?[^"]*)?"'
)


def _package_dir(spec: str) -> str:
    return spec.replace("/", "__")


def _needed() -> dict[str, set[str]]:
    files: dict[str, set[str]] = {}
    for spec, path in ASSETS.values():
        files.setdefault(spec, set()).add(path)
    for spec, paths in EXTRA_FILES.items():
        files.setdefault(spec, set()).update(paths)
    return files


def vendor_assets(cache: Path = VENDOR_CACHE) -> bool:
    """Fetch the packages once with npm (the machines reach its registry) into the cache.

    Returns whether every asset is in the cache; without npm or network the site keeps its
    CDN links, which work wherever a browser is online.
    """
    missing = {
        spec: paths
        for spec, paths in _needed().items()
        if not all((cache / _package_dir(spec) / p).exists() for p in paths)
    }
    if not missing:
        return True
    npm = shutil.which("npm")
    if npm is None:
        log.warning("npm not found: Data Docs keep their CDN links (they need a browser online)")
        return False
    download = cache / ".download"
    download.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(
            [npm, "pack", "--silent", "--pack-destination", str(download), *missing],
            check=True,
            capture_output=True,
            timeout=300,
            env={**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false"},
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not fetch Data Docs assets with npm (%s): keeping CDN links", exc)
        return False
    for spec, paths in missing.items():
        name, version = spec.rsplit("@", 1)
        tarball = download / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
        target = cache / _package_dir(spec)
        with tarfile.open(tarball) as archive:
            for path in paths:
                member = archive.extractfile(f"package/{path}")
                if member is None:
                    continue
                out = target / path
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_name(f".tmp-{out.name}")
                tmp.write_bytes(member.read())
                os.replace(tmp, out)
        tarball.unlink()
    return all((cache / _package_dir(s) / p).exists() for s, ps in _needed().items() for p in ps)


def localize_site(site: Path, since: float = 0.0, cache: Path = VENDOR_CACHE) -> int:
    """Copy the assets into site/static/vendor and point pages written since `since` at them.

    Returns how many pages were rewritten.
    """
    if not vendor_assets(cache):
        return 0
    vendor = site / "static" / "vendor"
    for spec, paths in _needed().items():
        for path in paths:
            out = vendor / _package_dir(spec) / path
            if not out.exists():
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(cache / _package_dir(spec) / path, out)
    rewritten = 0
    for page in site.rglob("*.html"):
        if page.stat().st_mtime < since:
            continue
        text = page.read_text()
        if "https://" not in text:
            continue
        images = os.path.relpath(site / "static" / "images", page.parent)
        # The navbar logo comes from GE's S3 bucket with the context id appended (a tracking
        # pixel); GE ships the same image in the site's static/images.
        new = WEB_ASSET.sub(rf'"{images}/\1"', text)
        for url, (spec, path) in ASSETS.items():
            local = os.path.relpath(vendor / _package_dir(spec) / path, page.parent)
            new = new.replace(f'"{url}"', f'"{local}"')
        if new != text:
            page.write_text(new)
            rewritten += 1
    return rewritten
