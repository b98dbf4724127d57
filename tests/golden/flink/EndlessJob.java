import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;

/**
 * The job behind the recorded answers: generator -> keyBy -> map -> discarding sink.
 *
 * <p>Arguments: [sinkSlotSharingGroup|- [sinkParallelism [records]]]. Without records it never
 * ends (10 records/s); with records it finishes.
 */
public class EndlessJob {
    public static void main(String[] args) throws Exception {
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        boolean bounded = args.length > 2;
        DataGeneratorSource<Long> source =
                new DataGeneratorSource<>(
                        index -> index,
                        bounded ? Long.parseLong(args[2]) : Long.MAX_VALUE,
                        RateLimiterStrategy.perSecond(bounded ? 1000 : 10),
                        Types.LONG);
        DataStream<Long> numbers =
                env.fromSource(source, WatermarkStrategy.noWatermarks(), "generator");
        DataStream<Long> mapped =
                numbers.keyBy(n -> n % 16).map(n -> n * 2).returns(Types.LONG).name("double");
        var sink = mapped.sinkTo(new DiscardingSink<>()).name("discard");
        if (args.length > 0 && !args[0].equals("-")) {
            sink.slotSharingGroup(args[0]);
        }
        if (args.length > 1) {
            sink.setParallelism(Integer.parseInt(args[1]));
        }
        env.execute("rmd-endless");
    }
}
