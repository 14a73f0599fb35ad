"""The JSON shapes of a vector file's metadata, checked before any of it is used (see
vectorfile.SteeringVectors.from_tensors): a file is anyone's upload."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def metadata_problems(meta: dict) -> list[str]:
    """The JSON shapes of a file's metadata, checked before any of it is used: a file is
    anyone's upload, and a wrong shape must be a message, not a TypeError."""
    problems = []
    if not isinstance(meta["model_id"], str):
        problems.append("model_id must be a text")
    for key in ("hidden_size", "num_layers"):
        if not _is_int(meta[key]):
            problems.append(f"{key} must be an integer")
    if not (isinstance(meta["layers"], list) and all(_is_int(layer) for layer in meta["layers"])):
        problems.append("layers must be a list of integers")
    if not (isinstance(meta["dimensions"], list) and all(isinstance(dim, str) for dim in meta["dimensions"])):
        problems.append("dimensions must be a list of names")
    for key in ("functional_range", "negative_range"):
        ranges = meta.get(key, {})
        if not isinstance(ranges, dict):
            problems.append(f"{key} must be an object mapping dimensions to numbers")
        elif not all(_is_number(value) for value in ranges.values()):
            problems.append(f"each {key.replace('_', ' ')} must be a number")
    for key in ("method", "read", "created_at"):
        if key in meta and not isinstance(meta[key], str):
            problems.append(f"{key} must be a text")
    if "labels" in meta and not isinstance(meta["labels"], dict):
        problems.append("labels must be an object mapping dimensions to [negative, positive]")
    if meta.get("joint_range") is not None and not _is_number(meta["joint_range"]):
        problems.append("joint_range must be a number or null")
    if not isinstance(meta.get("steer_prompt", True), bool):
        problems.append("steer_prompt must be true or false")
    conditions = meta.get("conditions", {})
    if not (
        isinstance(conditions, dict)
        and all(
            isinstance(c, dict) and _is_int(c.get("layer")) and _is_number(c.get("threshold"))
            for c in conditions.values()
        )
    ):
        problems.append("conditions must map dimensions to {layer: integer, threshold: number}")
    if not isinstance(meta.get("condition_report", {}), dict):
        problems.append("condition_report must be an object")
    scores = meta.get("layer_scores", {})
    if not isinstance(scores, dict):
        problems.append("layer_scores must be an object mapping dimensions to lists of numbers")
    elif not all(isinstance(v, list) and all(_is_number(x) for x in v) for v in scores.values()):
        problems.append("layer_scores must map dimensions to lists of numbers")
    return problems
