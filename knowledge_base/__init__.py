"""The character knowledge base: read books, chunk them, index them, search them.

Stages: ``reading`` (any encoding -> clean text with chapters) -> ``chunking`` ->
``embedders`` (a registry) + ``keywords`` (BM25) -> ``store`` (a versioned Chroma
store per character, searched by hybrid retrieval) built by ``builder``.
``gen_chroma.py`` is the command line over this package.
"""
