"""Request and response bodies of every route. They make ``/openapi.json`` accurate, so generated clients and
schema-driven fuzzers learn the rules from the spec rather than from refusals.

``/`` and ``/predict`` read ``inputs`` as Text Embeddings Inference (TEI) does (``router/src/http/types.rs``):

* ``"text"`` → one input; ``["text"]`` → one input; ``["text", "text_pair"]`` → **one pair**;
* ``[["text"], ["text", "text_pair"], ...]`` → a batch of single texts and pairs;
* three or more bare strings → 422 (ambiguous: TEI refuses it, the serverless Inference API would read a batch).

A single input is answered with one list of ``{label, score}``, a batch with a list of such lists. A request that
carries the Inference API's ``parameters`` object (Hugging Face's ``InferenceClient.text_classification`` always
sends one, and parses the answer as a list of lists) is answered with a list of lists for a single input too. A
batch of plain texts without pairs is ``/v1/classify``'s ``inputs``, where a pair is written ``{"text", "text_pair"}``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator

# A text the model can score has at least one non-space character; the schema says so, so generated clients and
# schema-driven fuzzers know that "" and "   " are refused (422) rather than learning it from the server.
Text = Annotated[str, Field(pattern=r"\S", description="Text with at least one non-space character")]


def utf8(value: str | None) -> str | None:
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid UTF-8 text (no lone surrogates)") from None
    return value


def json_integer(value: Any) -> Any:
    # JSON Schema's "integer" admits 5.0 but not "5" or true; pydantic's strict int refuses the first and its lax
    # int accepts the others. This follows the schema the spec publishes.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


JsonInt = Annotated[int, BeforeValidator(json_integer)]


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# TEI's enum is written Left/Right; Hugging Face's client sends left/right. Both are read, and both are in the spec.
Direction = Annotated[Literal["left", "right", "Left", "Right"], AfterValidator(_lower)]
DIRECTION: Any = Field("right", description="Which end of an over-long input truncation cuts: right keeps the start")
PROMPT_NAME: Any = Field(None, description="A prompt the model's folder names (sentence-transformers' prompts), put "
                                           "before every input [default: an embedding folder's default prompt]")
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1), BeforeValidator(json_integer)]


class PredictParameters(BaseModel):
    """The Hugging Face Inference API's text-classification parameters (its client always sends the object)."""

    model_config = ConfigDict(extra="forbid")
    # The bound goes before the validator: after it, pydantic writes a non-standard "ge" into the JSON schema.
    top_k: Annotated[int, Field(ge=1), BeforeValidator(json_integer)] | None = Field(
        None, description="Labels per input (default: all)")
    function_to_apply: Literal["sigmoid", "softmax", "none"] | None = Field(
        None, description="Override the model's scoring function")


TextOrPair = Annotated[list[Text], Field(min_length=1, max_length=2,
                                       description="[text] or a pair [text, text_pair]")]
PredictInputs = Text | TextOrPair | Annotated[list[TextOrPair], Field(min_length=1)]
AMBIGUOUS = ("three or more bare strings are ambiguous: send one text, a pair [text, text_pair], or a batch "
             "[[text], [text, text_pair], ...] (or use /v1/classify, whose inputs are a list of texts)")


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: PredictInputs = Field(description=(
        "A text; a pair [text, text_pair]; or a batch [[text], [text, text_pair], ...] (TEI's rule). "
        "Three or more bare strings are refused."))
    raw_scores: StrictBool = Field(False, description="Logits instead of probabilities")
    truncate: StrictBool = Field(True, description="Cut over-long input to the model's limit; false answers 422")
    truncation_direction: Direction = DIRECTION
    prompt_name: str | None = PROMPT_NAME
    parameters: PredictParameters | None = Field(
        None, description="Inference API parameters; when present, a single input is answered as a list of lists")

    @field_validator("inputs", mode="before")
    @classmethod
    def _not_ambiguous(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > 2 and all(isinstance(v, str) for v in value):
            raise ValueError(AMBIGUOUS)
        return value


class LabelScore(BaseModel):
    label: str
    score: float


PredictResponse = list[LabelScore] | list[list[LabelScore]]


class ClassifyItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    text: str
    text_pair: str | None = Field(None, description="The second text of a sentence pair (NLI, paraphrase, rerank)")

    _check_id = field_validator("id")(utf8)  # the id is echoed back, so it must be encodable


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: Annotated[list[str | ClassifyItem], Field(min_length=1)] = Field(
        description="Texts, or {id, text, text_pair} objects")
    top_k: JsonInt = Field(1, ge=0, description="Labels per item; 0 = all")
    raw_scores: StrictBool = False
    truncate: StrictBool = True
    truncation_direction: Direction = DIRECTION
    prompt_name: str | None = PROMPT_NAME


class ItemErrorBody(BaseModel):
    type: str
    message: str


class ClassifyResult(BaseModel):
    id: str
    label: str | None = None
    score: float | None = None
    scores: list[LabelScore] = Field(default_factory=list)
    tokens: int = 0
    cached: bool = False
    error: ItemErrorBody | None = None


class ClassifyResponse(BaseModel):
    request_id: str
    model: str
    results: list[ClassifyResult]
    timing_ms: dict[str, float]


class RerankRequest(BaseModel):
    """TEI's rerank: score each (query, text) pair with a 1-label model (a cross-encoder), best first."""

    model_config = ConfigDict(extra="forbid")
    query: Text
    texts: Annotated[list[Text], Field(min_length=1)]
    truncate: StrictBool = Field(True, description="Cut over-long pairs to the model's limit; false answers 422")
    truncation_direction: Direction = DIRECTION
    prompt_name: str | None = PROMPT_NAME
    raw_scores: StrictBool = Field(False, description="The logit instead of its sigmoid")
    return_text: StrictBool = Field(False, description="Echo each text beside its score")


class Rank(BaseModel):
    index: int = Field(description="Position of the text in the request's texts")
    score: float
    text: str | None = Field(None, description="The text, when return_text was asked for")


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: str | Annotated[list[str], Field(min_length=1)] = Field(description="A text or a list of texts")
    add_special_tokens: StrictBool = True

    @field_validator("inputs")
    @classmethod
    def _encodable(cls, value: Any) -> Any:
        for text in [value] if isinstance(value, str) else value:
            utf8(text)
        return value


class SimpleToken(BaseModel):
    id: int
    text: str
    special: bool
    start: int | None = Field(description="Character offset in the input (null for special tokens)")
    stop: int | None


class DecodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[TokenId] | Annotated[list[list[TokenId]], Field(min_length=1)] = Field(
        description="Token ids, or a list of token-id lists")
    skip_special_tokens: StrictBool = True


class ErrorBody(BaseModel):
    error: str
    error_type: str
    request_id: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **{code: {"model": ErrorBody} for code in (400, 401, 413, 422, 429, 500, 503, 504)},
    424: {"model": ErrorBody, "description": "The model serves another task (a classify route on an embedding "
                                             "model, an embed route on a classifier)"}}
RERANK_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES, 424: {"model": ErrorBody, "description": "The model is not a 1-label re-ranker"}}


def declare_model_options(schema: dict[str, Any], prompts: list[str], dimension: int | None) -> dict[str, Any]:
    """Write the model's own choices into the spec: ``prompt_name`` one of its prompts (or null), ``dimensions`` at
    most its vector size. Like the input limit, they depend on the model served, not on the static models."""
    for body in schema.get("components", {}).get("schemas", {}).values():
        props = body.get("properties", {})
        if "prompt_name" in props:
            names: dict[str, Any] = {"type": "string", "enum": prompts} if prompts else {"not": {}}
            props["prompt_name"]["anyOf"] = [names, {"type": "null"}]
        if "dimensions" in props and dimension is not None:
            for option in props["dimensions"].get("anyOf", []):
                if option.get("type") == "integer":
                    option["maximum"] = dimension
    return schema


def declare_input_limit(schema: dict[str, Any], max_inputs: int) -> dict[str, Any]:
    """Write the server's own ``max_inputs_per_request`` into the spec as maxItems of every list of inputs.

    The limit is a server option, so the static models cannot carry it; check_count enforces it with the same words.
    A pair ``[text, text_pair]`` keeps its own maxItems of 2.
    """
    schemas = schema.get("components", {}).get("schemas", {})
    lists = {"PredictRequest": "inputs", "ClassifyRequest": "inputs", "RerankRequest": "texts",
             "TokenizeRequest": "inputs", "DecodeRequest": "ids", "EmbedRequest": "inputs",
             "OpenAIEmbeddingRequest": "input", "SimilarityInput": "sentences"}
    for name, field in lists.items():
        prop = schemas.get(name, {}).get("properties", {}).get(field, {})
        for option in [prop, *prop.get("anyOf", [])]:
            if option.get("type") != "array":
                continue
            items = option.get("items", {})
            is_batch = name not in ("PredictRequest", "DecodeRequest") or items.get("type") == "array"
            if is_batch:
                option["maxItems"] = max_inputs
    return schema
