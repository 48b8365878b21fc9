"""Governed data sharing (政务数据共享): the contract requesters and providers share.

- `datasharing.proto`: the DataSharing gRPC API (compiled by infra/scripts/protos.sh);
- `catalogue.toml` / `demands.toml` and `governance`: the sharing catalogue (供给清单) and
  the demand list (需求清单), checked at load, and the rule a query is answered under;
- `endpoints`: where each provider listens and the certificates of providers and requesters.
"""
