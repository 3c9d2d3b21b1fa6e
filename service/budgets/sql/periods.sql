-- A budget window's bounds: calendar day/week/month in the configured time zone, or the
-- whole of time ('total': from -infinity, never ending).
CREATE OR REPLACE FUNCTION qgw_period_start(period text, at timestamptz, tz text)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN period = 'total' THEN '-infinity'::timestamptz
                ELSE date_trunc(period, at, tz) END
$$;

CREATE OR REPLACE FUNCTION qgw_period_end(period text, starts timestamptz, tz text)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN period = 'total' THEN NULL
                ELSE ((starts AT TIME ZONE tz) + ('1 ' || period)::interval)
                     AT TIME ZONE tz END
$$;
