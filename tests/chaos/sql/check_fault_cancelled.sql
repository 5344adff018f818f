-- Sagas a fault cancelled: a good card, and a step that timed out. Stock refusals
-- answer at once (stock.rejected), so no timeout is ever the shelf's doing.
SELECT count(*) FILTER (WHERE card_token = 'tok_visa'),
       format('%s with a good card, %s with a declining card; by step: %s',
              count(*) FILTER (WHERE card_token = 'tok_visa'),
              count(*) FILTER (WHERE card_token = 'tok_decline'),
              coalesce(string_agg(DISTINCT reason, ', '), 'none'))
FROM orders."order"
WHERE status = 'cancelled' AND reason LIKE 'timed out%' AND card_token <> 'tok_timeout'
