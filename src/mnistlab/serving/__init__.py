"""Serve a trained model: a draw-a-digit page and a JSON API (``mnistlab serve``).

``mnistlab.serving.app.create_app(run_dir)`` builds the FastAPI app; the page lives in
``static/`` and is served by the app itself (no CDN).
"""
