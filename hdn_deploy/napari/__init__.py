"""napari plugin: a widget that denoises an image layer and a reader for our output TIFFs.

Installed with the ``[napari]`` extra; napari finds it through the ``napari.manifest``
entry point (``napari.yaml`` beside this file). Importing this package imports no Qt.
"""
