"""The one place that builds the real adapters from settings and hands them to the
services. Each Lambda handler calls one of these at module scope, once per container;
the tests build the services with in-memory stores instead (tests/fakes.py)."""
from __future__ import annotations

from functools import lru_cache

from recsys.adapters.artifacts import PopularityStore, S3Releases
from recsys.adapters.events import DeadLetterQueue, KinesisEventStream, RawEventLog
from recsys.adapters.items import ItemRepository
from recsys.adapters.profiles import ProfileRepository
from recsys.adapters.tracking import ImpressionStore, MetricsStore
from recsys.experiments import parse_variants
from recsys.ingest import EventIngestor, ItemEncoder, PopularityCounter
from recsys.live import LiveCatalog
from recsys.ports import TextEncoder
from recsys.service import Recommender
from recsys.settings import Settings
from recsys.tokens import UserTokens, parse_secrets

# The events function reads items added since the release less often than the API:
# events about an item added seconds ago move the profile's recent items, not its vectors.
EVENTS_CATALOG_REFRESH_SECONDS = 5.0


@lru_cache(maxsize=1)
def encoder(model_dir: str | None = None) -> TextEncoder:
    """The int8 encoder: the layer's model (encoder_model), or the one in `model_dir`."""
    from recsys.encoder import Encoder
    if model_dir is None:
        from encoder_model import MODEL_DIR
        model_dir = str(MODEL_DIR)
    return Encoder(model_dir)


def encoder_for(settings: Settings) -> TextEncoder:
    return encoder(str(settings.model_dir) if settings.model_dir else None)


def recommender(settings: Settings) -> Recommender:
    """The API function's service: every store, the live catalog with its collaborative model."""
    settings.require("profiles_table", "items_table", "events_stream", "artifacts_bucket",
                     "raw_events_bucket", "impressions_table", "metrics_table")
    text_encoder = encoder_for(settings)
    items = ItemRepository(settings)
    catalog = LiveCatalog(S3Releases(settings), items, text_encoder.version, text_encoder.dim,
                          popularity=PopularityStore(settings), release_dir=settings.release_dir)
    return Recommender(text_encoder, catalog, items, ProfileRepository(settings), KinesisEventStream(settings),
                       RawEventLog(settings), ImpressionStore(settings), MetricsStore(settings),
                       parse_variants(settings.variants))


def user_tokens(settings: Settings) -> UserTokens | None:
    """The API's user-token check; None when USER_TOKEN_SECRET is empty (tokens off: the
    clients' key is a server's, trusted for every user). A secret too short to be one raises."""
    secrets = parse_secrets(settings.user_token_secret)
    return UserTokens(secrets) if secrets else None


def event_ingestor(settings: Settings) -> EventIngestor:
    """The events function's service: profiles, the raw log, and the item vectors alone (the
    collaborative model is never read there); clicks and purchases are attributed when the
    impressions and metrics tables are set."""
    settings.require("profiles_table", "items_table", "artifacts_bucket", "raw_events_bucket")
    text_encoder = encoder_for(settings)
    catalog = LiveCatalog(S3Releases(settings), ItemRepository(settings), text_encoder.version, text_encoder.dim,
                          refresh_seconds=EVENTS_CATALOG_REFRESH_SECONDS, collaborative=False,
                          release_dir=settings.release_dir)
    attributing = bool(settings.impressions_table and settings.metrics_table)
    return EventIngestor(text_encoder, catalog, ProfileRepository(settings), RawEventLog(settings),
                         DeadLetterQueue(settings) if settings.events_dead_letter_queue else None,
                         ImpressionStore(settings) if attributing else None,
                         MetricsStore(settings) if attributing else None)


def popularity_counter(settings: Settings) -> PopularityCounter:
    settings.require("artifacts_bucket")
    return PopularityCounter(PopularityStore(settings))


def item_encoder(settings: Settings) -> ItemEncoder:
    settings.require("items_table")
    return ItemEncoder(encoder_for(settings), ItemRepository(settings))
