"""The zoo's manifest (manifest.json), shipped inside the package as `sreval.model_zoo`.

Built ONNX files never go here: they go to the user cache (`sreval.zoo.zoo_dir`).
"""
