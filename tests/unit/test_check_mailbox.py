"""A bare ``pwasync check`` tests the mailbox of one assignee it finds in the plans."""

from common.mailboxes import ANY_MAILBOX, MailboxPolicy
from services.ops.plans import FoundAssignee, an_assignee_mailbox
from tests.unit.fakes import ListFeed


def test_the_first_assignee_the_sync_would_write_to_is_chosen():
    feed = ListFeed()
    outsider = feed.person("Outsider", "someone@fabrikam.com")
    nobody = feed.person("External Contractor", None)
    megan = feed.person("Megan Bowen", "megan@contoso.com")
    master = feed.project("Portfolio", kind=6)
    feed.task(master, "Quarterly review", people=[outsider])
    berlin = feed.project("Office Relocation Berlin")
    feed.task(berlin, "Cut-over", flagged=False, people=[megan])
    feed.task(berlin, "Network cabling", people=[nobody])
    feed.task(berlin, "Partner visit", people=[outsider])
    feed.task(berlin, "Site survey", people=[megan])
    policy = MailboxPolicy(frozenset({"contoso.com"}))
    assert an_assignee_mailbox(feed, policy) == FoundAssignee(
        "megan@contoso.com", "Megan Bowen", "Site survey", "Office Relocation Berlin"
    )
    # Without a domain policy the outsider of the flagged task comes first.
    assert an_assignee_mailbox(feed, ANY_MAILBOX).mailbox == "someone@fabrikam.com"


def test_with_nothing_flagged_any_assignee_with_a_mailbox_will_do():
    feed = ListFeed()
    feed.project("Empty")
    crm = feed.project("CRM Rollout")
    feed.task(crm, "Data migration", flagged=False, people=[feed.person("Lee Gu", "lee@x.com")])
    found = an_assignee_mailbox(feed, ANY_MAILBOX)
    assert found == FoundAssignee("lee@x.com", "Lee Gu", "Data migration", "CRM Rollout")


def test_none_is_found_in_plans_without_an_assignee_with_a_mailbox_or_past_the_limit():
    feed = ListFeed()
    crm = feed.project("CRM Rollout")
    feed.task(crm, "Data migration", people=[feed.person("External", None)])
    assert an_assignee_mailbox(feed, ANY_MAILBOX) is None
    later = feed.project("Later")
    feed.task(later, "Go-live", people=[feed.person("Nestor", "nestor@x.com")])
    assert an_assignee_mailbox(feed, ANY_MAILBOX, most_projects=1) is None
    assert an_assignee_mailbox(feed, ANY_MAILBOX).mailbox == "nestor@x.com"
