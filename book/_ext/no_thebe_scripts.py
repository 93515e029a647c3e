"""A Sphinx extension that keeps sphinx-thebe's scripts off the website, which does not use Thebe.

Jupyter Book 1.x always loads sphinx-thebe, even with `launch_buttons.thebe: false`. sphinx-thebe then adds
to every page an inline script naming Thebe's CDN, and with Sphinx 7.4 that inline script is written twice,
so every page throws "Identifier 'THEBE_JS_URL' has already been declared" (tests/browser catches it).
Without Thebe the scripts do nothing, so this removes them. Listed in _config.yml under sphinx.local_extensions.
"""


def _is_thebe(filename, attributes) -> bool:
    return str(filename or "").endswith("sphinx-thebe.js") or "THEBE_JS_URL" in str(attributes.get("body", ""))


def remove_thebe_scripts(app, env, docnames):
    app.registry.js_files = [(f, attrs) for f, attrs in app.registry.js_files if not _is_thebe(f, attrs)]
    if hasattr(app.builder, "_js_files"):  # what the HTML builder already collected
        app.builder._js_files = [js for js in app.builder._js_files if not _is_thebe(js.filename, js.attributes)]


def setup(app):
    # sphinx-thebe adds its scripts on env-before-read-docs at the default priority 500; run after it
    app.connect("env-before-read-docs", remove_thebe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
