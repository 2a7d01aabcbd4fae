"""cleanup(8) as a library: header and envelope processing before the spool
(`oxipost.cleanup.message.cleanup_message`, its result `oxipost.cleanup.state.Cleaned`).

The package imports none of its modules: sendmail and postdrop weigh a submission with the
record tables of `oxipost.cleanup.records` alone, and the header pass brings in smtpd's
checks and asyncio, which a process per submitted message should not pay for."""
