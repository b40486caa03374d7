"""Request and response bodies of the embedding routes: TEI's ``/embed`` and ``/similarity``, and OpenAI's
``/v1/embeddings``. Field names, defaults and shapes are theirs, so their clients work unchanged
(``huggingface_hub.InferenceClient.feature_extraction`` and ``sentence_similarity``, ``openai``'s
``embeddings.create``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from padless.server.schemas import DIRECTION, PROMPT_NAME, Direction, Text, json_integer

Dimensions = Annotated[int, Field(ge=1), BeforeValidator(json_integer)]
Texts = Text | Annotated[list[Text], Field(min_length=1)]


class EmbedRequest(BaseModel):
    """TEI's ``/embed`` (and ``POST /`` on an embedding model)."""

    model_config = ConfigDict(extra="forbid")
    inputs: Texts = Field(description="A text or a list of texts")
    normalize: StrictBool = Field(True, description="L2-normalise each vector (after dimensions)")
    truncate: StrictBool = Field(True, description="Cut over-long input to the model's limit; false answers 422")
    truncation_direction: Direction = DIRECTION
    prompt_name: str | None = PROMPT_NAME
    dimensions: Dimensions | None = Field(None, description="Keep the first N dimensions (Matryoshka) [default: "
                                                            "the model's truncate_dim, else all]")


class SimilarityInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_sentence: Text
    sentences: Annotated[list[Text], Field(min_length=1)]


class SimilarityParameters(BaseModel):
    """Hugging Face's client sends an empty ``parameters`` object; nothing in it is read."""

    model_config = ConfigDict(extra="forbid")


class SimilarityRequest(BaseModel):
    """TEI's ``/similarity``: the cosine of ``source_sentence`` with each of ``sentences``."""

    model_config = ConfigDict(extra="forbid")
    inputs: SimilarityInput
    truncate: StrictBool = Field(True, description="Cut over-long input to the model's limit; false answers 422")
    truncation_direction: Direction = DIRECTION
    prompt_name: str | None = PROMPT_NAME
    parameters: SimilarityParameters | None = None


EmbedResponse = list[list[float]]
SimilarityResponse = list[float]


class OpenAIEmbeddingRequest(BaseModel):
    """OpenAI's ``POST /v1/embeddings``. Vectors are normalised, as OpenAI's are."""

    model_config = ConfigDict(extra="forbid")
    input: Texts = Field(description="A text or a list of texts (token-id arrays are not accepted)")
    model: str | None = Field(None, description="Echoed back; the server runs its one model whatever is named")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: lists of numbers; base64: each vector's little-endian float32 bytes")
    dimensions: Dimensions | None = Field(None, description="Keep the first N dimensions (Matryoshka models)")
    user: str | None = Field(None, description="Accepted and ignored")


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage
