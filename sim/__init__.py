"""Stand-ins for systems outside Tongban: other provinces' authorities and the postal carrier.

Each simulated partner connects with its own client identity and consumer group, reads only
its outbound topics and writes only its inbound ones, as a real partner system would.
"""
