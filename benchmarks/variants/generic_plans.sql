-- Experiment: kahuna.try_reserve planned once per session. Its statements name the
-- partitioned tables with parameters, and the plan cache keeps choosing a custom plan for
-- them (the generic plan's estimate counts both partitions), so each call plans again.
ALTER FUNCTION kahuna.try_reserve(text, bigint, text, text) SET plan_cache_mode = force_generic_plan;
