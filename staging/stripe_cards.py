"""Stripe's test PaymentMethods (https://docs.stripe.com/testing): what a charge with each does,
succeed, decline with its error code and decline_code (https://docs.stripe.com/declines/codes),
or ask for 3-D Secure, and the PaymentMethod object the API shows for it."""

from __future__ import annotations

from typing import Any

# Stripe's test PaymentMethods (https://docs.stripe.com/testing): brand, last4, and what a charge
# does: None succeeds, "3ds" needs authentication, else (error code, decline_code, message).
_DECLINED = "Your card was declined."
_DECLINES = {
    "ChargeDeclined": ("0002", ("card_declined", "generic_decline", _DECLINED)),
    "ChargeDeclinedInsufficientFunds": (
        "9995",
        ("card_declined", "insufficient_funds", "Your card has insufficient funds."),
    ),
    "ChargeDeclinedLostCard": ("9987", ("card_declined", "lost_card", _DECLINED)),
    "ChargeDeclinedStolenCard": ("9979", ("card_declined", "stolen_card", _DECLINED)),
    "ChargeDeclinedFraudulent": ("0019", ("card_declined", "fraudulent", _DECLINED)),
    "ChargeDeclinedVelocityLimitExceeded": (
        "6975",
        ("card_declined", "card_velocity_exceeded", _DECLINED),
    ),
    "ChargeDeclinedExpiredCard": (
        "0069",
        ("expired_card", "expired_card", "Your card has expired."),
    ),
    "ChargeDeclinedIncorrectCvc": (
        "0127",
        ("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."),
    ),
    "ChargeDeclinedProcessingError": (
        "0119",
        (
            "processing_error",
            "processing_error",
            "An error occurred while processing your card. Try again in a little bit.",
        ),
    ),
}
TEST_CARDS: dict[str, tuple[str, str, Any]] = {
    "pm_card_visa": ("visa", "4242", None),
    "pm_card_visa_debit": ("visa", "5556", None),
    "pm_card_mastercard": ("mastercard", "4444", None),
    "pm_card_mastercard_debit": ("mastercard", "8210", None),
    "pm_card_mastercard_prepaid": ("mastercard", "5100", None),
    "pm_card_amex": ("amex", "8431", None),
    "pm_card_discover": ("discover", "1117", None),
    "pm_card_diners": ("diners", "0004", None),
    "pm_card_jcb": ("jcb", "0505", None),
    "pm_card_unionpay": ("unionpay", "0005", None),
    "pm_card_threeDSecureOptional": ("visa", "3055", None),
    "pm_card_authenticationRequiredOnSetup": ("visa", "3155", None),
    "pm_card_authenticationRequired": ("visa", "3184", "3ds"),
    "pm_card_threeDSecure2Required": ("visa", "3220", "3ds"),
    "pm_card_threeDSecureRequired": ("visa", "3063", "3ds"),
    **{f"pm_card_{k[0].lower()}{k[1:]}": ("visa", v[0], v[1]) for k, v in _DECLINES.items()},
    **{f"pm_card_visa_{k[0].lower()}{k[1:]}": ("visa", v[0], v[1]) for k, v in _DECLINES.items()},
}
KNOWN_PMS = frozenset(TEST_CARDS)


def payment_method_object(pm: str) -> dict[str, Any]:
    """The PaymentMethod object of a test payment method."""
    brand, last4, _ = TEST_CARDS[pm]
    return {
        "id": pm,
        "object": "payment_method",
        "type": "card",
        "card": {
            "brand": brand,
            "last4": last4,
            "exp_month": 12,
            "exp_year": 2034,
            "funding": "credit",
        },
        "created": 0,
        "customer": None,
        "livemode": False,
        "metadata": {},
    }
