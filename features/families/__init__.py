"""Feature families: each owns a few ranker features, how they are computed and how they are gathered.

Adding a feature is one class in one file here, plus its place in
:data:`FAMILIES`. The order is the order of the ranker's columns and the
order in which families compute (later ones may read what earlier ones
added: taste reads item attributes, segments read user attributes).
"""

from features.families.affinity import Affinity
from features.families.base import (
    Column,
    ComputeContext,
    FeatureFamily,
    FeatureTables,
    FreshUsers,
    Pairs,
    ViewContext,
)
from features.families.candidate_pair import CandidatePair
from features.families.item_activity import ItemActivity
from features.families.item_attributes import ItemAttributes
from features.families.list_one_hot import ListOneHot
from features.families.recent_similarity import RecentSimilarity
from features.families.segments import Segments
from features.families.taste import Taste
from features.families.user_activity import UserActivity
from features.families.user_attributes import UserAttributes

FAMILIES: tuple[type[FeatureFamily], ...] = (
    CandidatePair,
    ItemActivity,
    ItemAttributes,
    ListOneHot,
    UserActivity,
    UserAttributes,
    Affinity,
    Segments,
    Taste,
    RecentSimilarity,
)

__all__ = [
    "FAMILIES",
    "Column",
    "ComputeContext",
    "FeatureFamily",
    "FeatureTables",
    "FreshUsers",
    "Pairs",
    "Segments",
    "ViewContext",
]
