"""The products service's HTTP contract: its request bodies, query and answers."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from services.shared.models import Id, Query, RequestBody, ResponseBody, Timestamp, omitted

# Far below the integer column's limit, so that stock arithmetic never overflows.
MAX_STOCK = 1_000_000_000
MAX_PRICE_CENTS = 100_000_000

# Trimmed before the length rules: blank is empty.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Category = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Description = Annotated[str, Field(max_length=2000)]
PriceCents = Annotated[int, Field(ge=0, le=MAX_PRICE_CENTS)]


def _not_zero(delta: int) -> int:
    if delta == 0:
        raise PydanticCustomError("zero", "must not be zero")
    return delta


class NewProduct(RequestBody):
    name: Name
    description: Description = ""
    category: Category
    price_cents: PriceCents
    stock: Annotated[int, Field(ge=0, le=MAX_STOCK)] = 0


class ProductChanges(RequestBody):
    """Only the fields sent change; at least one must be."""

    name: Name = omitted()
    description: Description = omitted()
    category: Category = omitted()
    price_cents: PriceCents = omitted()
    active: bool = omitted()

    @model_validator(mode="after")
    def _something(self) -> ProductChanges:
        if not self.model_fields_set:
            raise PydanticCustomError("empty", "must set at least one field")
        return self


class StockChange(RequestBody):
    delta: Annotated[int, Field(ge=-MAX_STOCK, le=MAX_STOCK), AfterValidator(_not_zero)]


class ProductFilter(Query):
    category: Annotated[str, Field(max_length=100)] | None = None


class Product(ResponseBody):
    product_id: Id
    name: str
    description: str
    category: str
    price_cents: int
    active: bool
    stock: int
    created_at: Timestamp
    updated_at: Timestamp


class Products(ResponseBody):
    products: list[Product]


class CategoryName(ResponseBody):
    name: str


class Categories(ResponseBody):
    categories: list[CategoryName]


class StockLevel(ResponseBody):
    product_id: Id
    stock: int
