"""Build a :class:`~pricing.cost.Pricer` from the database (control plane only).

The data plane gets the same objects from the governance snapshot; the quote endpoint and
the admin build them here, on demand.
"""

from __future__ import annotations

from gateway.models import Provider
from pricing.catalog import PriceCatalog
from pricing.cost import Pricer, ProviderPricing, UnpricedCounter
from pricing.models import PricingOverride
from pricing.resolution import OverrideRecord

# One counter for the process, so the metric survives rebuilt Pricers.
UNPRICED = UnpricedCounter()


def override_record(row: PricingOverride) -> OverrideRecord:
    return OverrideRecord(
        id=str(row.id),
        name=row.name,
        scope_kind=row.scope_kind,
        virtual_key_id=str(row.virtual_key_id) if row.virtual_key_id else None,
        provider_id=row.provider.name if row.provider_id else None,
        provider_key_id=str(row.provider_key_id) if row.provider_key_id else None,
        match_type=row.match_type,
        pattern=row.pattern,
        request_types=frozenset(row.request_types),
        patch=dict(row.patch),
        updated_at=row.updated_at,
    )


def provider_pricing(provider: Provider) -> ProviderPricing:
    return ProviderPricing(name=provider.name, kind=provider.kind,
                           price_provider=provider.price_provider)


def load_pricer(*, extra_providers: tuple[ProviderPricing, ...] = ()) -> Pricer:
    overrides = [override_record(row)
                 for row in PricingOverride.objects.select_related("provider")]
    providers = [provider_pricing(provider) for provider in Provider.objects.all()]
    return Pricer(catalog=PriceCatalog.bundled(), overrides=overrides,
                  providers=[*providers, *extra_providers], unpriced=UNPRICED)
