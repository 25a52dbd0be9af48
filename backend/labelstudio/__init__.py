"""Label Studio I/O: API clients, the label config, prediction and annotation JSON, media, keyframe
images and a local Label Studio server."""
