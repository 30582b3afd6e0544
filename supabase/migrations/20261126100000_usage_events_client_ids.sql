-- Let users choose the id of the events they append (the recorder's retry safety).
--
-- The recorder assigns every event a random uuid before its first attempt. After a dropped
-- connection it cannot know whether the commit happened; writing again with the same id
-- (insert ... on conflict do nothing) either stores the event or finds it already stored, so a
-- retry never duplicates an event, with or without an idempotency key. created_at stays
-- server-stamped for users: they still cannot backdate usage.

grant insert (id) on table public.usage_events to authenticated;

comment on column public.usage_events.id is
  'Event id: chosen by the recorder (uuid v4) so retries are safe, or gen_random_uuid().';
