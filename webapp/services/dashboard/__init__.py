"""Read models of the dashboard, one module per area: the overview and its chart, customers,
wallets, features and the audit log. Every function runs a constant number of queries whatever
the page or history size; "usage this period" is defined once (current.current_usage)."""

from .alerts import InAppAlerts, in_app_alerts
from .audit import AuditPage, audit_log
from .current import MAX_PER_PAGE
from .customers import (
    CUSTOMER_SORTS,
    Column,
    CustomerList,
    CustomerRow,
    MonthChange,
    list_customers,
)
from .features import FeatureRow, features
from .grants import (
    PaidBy,
    VoidPreview,
    WalletGrants,
    customer_grant,
    entry_paid_by,
    unconfirmed_void,
    wallet_grants,
)
from .overview import CreditTotal, DailySeries, FeatureTotal, Overview, daily_usage, overview
from .wallets import WalletList, WalletRow, lowest_wallets

__all__ = [
    "InAppAlerts",
    "in_app_alerts",
    "CUSTOMER_SORTS",
    "MAX_PER_PAGE",
    "AuditPage",
    "Column",
    "CreditTotal",
    "CustomerList",
    "CustomerRow",
    "DailySeries",
    "FeatureRow",
    "FeatureTotal",
    "MonthChange",
    "Overview",
    "PaidBy",
    "VoidPreview",
    "WalletGrants",
    "WalletList",
    "WalletRow",
    "audit_log",
    "customer_grant",
    "entry_paid_by",
    "unconfirmed_void",
    "wallet_grants",
    "daily_usage",
    "features",
    "list_customers",
    "lowest_wallets",
    "overview",
]
