"""The text-to-layout prior, a research addition that no released model has: the network
(:mod:`.model`), its fitting for a finished model folder (:mod:`.fitting`, ``fusionframes
layout-prior``) and the keyframe start the pipeline asks it for (:mod:`.start`).

The pipeline reaches it only through :func:`fusionframes.layout_prior.start.keyframe_start`; a model
folder without a ``layout_prior/`` component samples exactly as the release does.
"""
