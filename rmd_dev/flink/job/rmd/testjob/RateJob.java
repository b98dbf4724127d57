package rmd.testjob;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.connector.datagen.source.GeneratorFunction;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;

/**
 * A rate-limited streaming job for rmd's tests: generated numbers, keyed, dropped.
 *
 * <p>Arguments: [records per second, default 100] [records in all, default: endless]. With a
 * count the input is bounded and the job ends by itself (FINISHED) after about count / rate
 * seconds of running. The parallelism is the submitter's (REST {@code ?parallelism=N}, or
 * {@code parallelism.default}); every operator runs at it, so a job with parallelism N needs
 * N slots.
 */
public final class RateJob {

    private RateJob() {}

    public static void main(String[] args) throws Exception {
        long perSecond = args.length > 0 ? Long.parseLong(args[0]) : 100L;
        long count = args.length > 1 ? Long.parseLong(args[1]) : Long.MAX_VALUE;
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        DataGeneratorSource<Long> source =
                new DataGeneratorSource<>(
                        (GeneratorFunction<Long, Long>) index -> index,
                        count,
                        RateLimiterStrategy.perSecond(perSecond),
                        Types.LONG);
        env.fromSource(source, WatermarkStrategy.noWatermarks(), "generator")
                .keyBy(value -> value % 128)
                .sinkTo(new DiscardingSink<>())
                .name("discard");
        env.execute("rmd-rate-job");
    }
}
