"""The dashboards' Simplified Chinese texts. Same keys as texts_en.py (a test checks it).

Wording follows the product's own terms: 租户, 成员, 智能体, 工作流, 对话工作流,
调用者归属, Token消耗, 热度指标 / 成本指标, 查看全部, and its column names (模型名称,
Token总消耗, 输入Token, 输出Token, 消耗占比, 创建时间, 创建人, 排行).
"""

TEXTS: dict[str, str] = {
    # -- shared sentences --------------------------------------------------------------------
    "common.caller": "调用者归属：仅统计当前租户成员（调用者）所产生的Token消耗。",
    "common.heat": "统计全平台（含租户外）。",
    "common.cost": "仅统计当前租户成员消耗。",
    "common.range": "所选时间范围内的精确值：时间范围结束时所有导出器（exporter）的计数器之和，"
                    "减去开始时的同一和（导出器在新地址重启不会被重复计数）。",
    "common.period": "与仪表盘的时间范围无关：取自导出器自身的日历周期（llm_period_*，见 "
                     "docs/budgets.md），每个租户按其时区（预算文件中的设置，未设置时为UTC）划分"
                     "日和月，无论Prometheus保留多久的数据都是精确值；取时间范围结束时刻（范围结束"
                     "于现在时即为现在）的值，并对所有导出器求和。",
    "common.no_data_yesterday": "用于比较的那一天或那个月没有消耗时显示无数据（不会显示∞或错误）。",
    "link.menu": "LLM Token",
    "link.view_all": "查看全部",
    # -- variables ---------------------------------------------------------------------------
    "var.datasource.label": "数据源",
    "var.datasource.description": "采集导出器指标的 Prometheus。",
    "var.tenant.label": "租户",
    "var.tenant.description": "目录中的租户（llm_member_info）。该变量不做租户隔离：见文档。",
    "var.search.label": "搜索",
    "var.search.description": "在浏览器中筛选表格的行：不区分大小写，按字面匹配（不支持通配符）；"
                              "匹配名称或ID（成员还匹配邮箱、mis和手机号，需导出器开启导出）。"
                              "搜索内容不会发送给 Prometheus。",
    # -- column headers ----------------------------------------------------------------------
    "col.tokens": "Token消耗",
    "col.total": "Token总消耗",
    "col.input": "输入Token",
    "col.output": "输出Token",
    "col.share": "消耗占比",
    "col.model": "模型名称",
    "col.agent": "智能体名称",
    "col.workflow": "工作流名称",
    "col.member": "成员",
    "col.tenant": "租户",
    "col.rank": "排行",
    "col.created_at": "创建时间",
    "col.creator": "创建人",
    "col.conversations": "对话次数",
    "col.users": "用户数",
    "col.runs": "运行次数",
    "col.service": "服务",
    "col.calls": "调用次数",
    # -- §1 tenant overview ------------------------------------------------------------------
    "overview.title": "LLM Token：数据总览",
    "overview.description": "单个租户的核心资源消耗分析：按智能体、工作流、模型和"
                            "成员统计的调用者归属Token与费用。",
    "overview.agent_tokens.title": "智能体Token消耗",
    "overview.agent_tokens.description":
        "{@common.caller}统计当前租户成员在调用智能体时，该智能体自身及其调用的工作流、工具和子智能体"
        "所产生的所有Token消耗总和。智能体底层的「对话工作流」产生的Token消耗归到这个智能体本身，"
        "不作为单独的工作流统计。智能体运行工作流时与「工作流Token消耗」重叠：两张卡片不可相加。"
        "{@common.range}",
    "overview.workflow_tokens.title": "工作流Token消耗",
    "overview.workflow_tokens.description":
        "{@common.caller}统计当前租户成员在调用工作流时，该工作流运行所产生的所有Token消耗总和"
        "（按最外层工作流计）。智能体的「对话工作流」在此不算工作流：其Token消耗归到智能体。"
        "智能体运行工作流时与「智能体Token消耗」重叠：两张卡片不可相加。{@common.range}",
    "overview.total_tokens.title": "Token总消耗",
    "overview.total_tokens.description":
        "{@common.caller}当前租户成员所有模型调用的全部Token（输入 + 输出），无论是否在智能体或"
        "工作流中。{@common.range}",
    "overview.cost.title": "费用（美元）",
    "overview.cost.description":
        "{@common.caller}「Token总消耗」按价格目录计算的费用（输入、输出、缓存读取和缓存写入分别"
        "计价）。价格目录中没有的模型不产生费用。{@common.range}",
    "overview.today.title": "今日Token消耗",
    "overview.today.description":
        "{@common.caller}当前租户成员今日的Token（输入 + 输出），按租户时区的日期计算，精确值。"
        "{@common.period}",
    "overview.today_vs_yesterday.title": "今日较昨日",
    "overview.today_vs_yesterday.description":
        "{@common.caller}今日截至目前的Token与昨日全天相比的变化（%）：(今日 − 昨日) / 昨日 × 100，"
        "日期按租户时区划分。一天刚开始时必然为负（部分的一天对比完整的一天）。"
        "{@common.no_data_yesterday}{@common.period}",
    "overview.month.title": "本月Token消耗",
    "overview.month.description":
        "{@common.caller}当前租户成员本自然月的Token（输入 + 输出），按租户时区计算，精确值。"
        "{@common.period}",
    "overview.month_vs_last.title": "本月较上月",
    "overview.month_vs_last.description":
        "{@common.caller}本月截至目前的Token与上月全月相比的变化（%）：(本月 − 上月) / 上月 × "
        "100，月份按租户时区划分。{@common.no_data_yesterday}{@common.period}",
    "overview.cost_month.title": "本月费用",
    "overview.cost_month.description":
        "{@common.caller}当前租户本月（按其时区）Token按价格目录计算的费用（美元），精确值。价格目录"
        "中没有的模型不产生费用：「本月未定价Token」统计这些Token，其大于0时本费用并不完整。"
        "{@common.period}",
    "overview.unpriced_month.title": "本月未定价Token",
    "overview.unpriced_month.description":
        "{@common.caller}本月价格目录中没有的模型的Token（llm_period_unpriced_tokens），不计入"
        "任何费用。大于0时「本月费用」和「费用（美元）」并不完整：请把该模型加入价格目录。"
        "{@common.period}",
    "overview.budget.title": "预算使用率",
    "overview.budget.description":
        "{@common.caller}当前租户本月预算已使用的比例（%）：已用 / 限额，取Token和美元两者中较大"
        "的一个（预算文件中的租户预算）；已用量对所有导出器求和，限额只取一次，与预算告警和 GET "
        "/v1/budgets/<tenant> 的计算方式相同。刻度为50%、80%、100%（默认阈值：警告、限流、耗尽；"
        "设置了自有阈值的预算按其自有阈值告警）。租户没有预算时显示无数据。{@common.period}",
    "overview.model_top.title": "模型消耗分析 Top 10",
    "overview.model_top.description":
        "{@common.caller}统计当前租户成员消耗各模型的Token用量（输入 + 输出），取前10。"
        "{@common.range}",
    "overview.agent_top.title": "智能体消耗分析 Top 10",
    "overview.agent_top.description":
        "{@common.caller}统计当前租户成员消耗各智能体的Token用量（按最外层智能体：其自身调用、"
        "对话工作流及其调用的工作流和工具），包括其他租户的智能体；取前10。目录中没有的智能体显示"
        "其ID。{@common.range}",
    "overview.workflow_top.title": "工作流消耗分析 Top 10",
    "overview.workflow_top.description":
        "{@common.caller}统计当前租户成员消耗各工作流的Token用量（按最外层工作流运行）；智能体的"
        "「对话工作流」不在此展示，其Token消耗归到智能体。取前10。{@common.range}",
    "overview.member_top.title": "成员Token消耗 Top 10",
    "overview.member_top.description":
        "{@common.caller}当前租户成员中Token消耗（输入 + 输出）排名前10的成员。{@common.range}",
    # -- §2 tenant assets --------------------------------------------------------------------
    "assets.title": "LLM Token：租户资产明细",
    "assets.description": "租户拥有的智能体和工作流：热度指标统计全平台，"
                          "Token消耗（成本指标）列仅统计当前租户成员。",
    "assets.heat.range": "{@common.heat}所选时间范围内。",
    "assets.heat.ever": "{@common.heat}历史累计的不同调用者数（不受时间范围限制）。",
    "assets.cost.range": "{@common.cost}所选时间范围内。",
    "assets.agents.title": "智能体列表",
    "assets.agents.description":
        "当前租户拥有的所有智能体（来自目录）。对话次数和用户数是热度指标：{@common.heat}"
        "对话次数为所选时间范围内的智能体调用次数（对话轮次，含子智能体）；用户数为历史累计的不同"
        "调用者数。Token消耗是成本指标：{@common.cost}为所选时间范围内该智能体的Token（其自身调用、"
        "对话工作流及其调用的工作流和工具）。{@common.range}",
    "assets.workflows.title": "工作流列表",
    "assets.workflows.description":
        "当前租户拥有的所有工作流（来自目录；对话工作流属于其智能体，不会列出）。运行次数是热度指标："
        "{@common.heat}运行次数为所选时间范围内的工作流运行次数（含嵌套运行）。Token消耗是成本指标："
        "{@common.cost}为所选时间范围内以该工作流为最外层工作流的运行所产生的Token。{@common.range}",
    # -- §3 drill-down -----------------------------------------------------------------------
    "drilldown.title": "LLM Token：消耗分析明细",
    "drilldown.description": "数据总览中「查看全部」的目标：租户的所有模型、智能体、"
                             "工作流和成员的Token总消耗、输入Token和输出Token，可排序、可搜索。",
    "drilldown.search_note": "搜索：在浏览器中筛选行（不区分大小写，按字面匹配），不会改变查询。",
    "drilldown.share.formula": "消耗占比 = 该模型的Token总消耗 / 当前租户在筛选时间内所有模型的"
                               "Token总消耗 × 100（搜索不改变分母）。",
    "drilldown.rank.description": "按筛选时间内的Token总消耗降序排列、在当前租户全部成员中的排名；"
                                  "搜索只隐藏行，不改变排名。",
    "drilldown.model.title": "模型消耗明细",
    "drilldown.model.description":
        "{@common.caller}当前租户成员在筛选时间内使用的所有模型：Token总消耗（输入 + 输出）、"
        "输入Token、输出Token，以及该模型的消耗占比。{@drilldown.share.formula}"
        "{@drilldown.search_note}按模型名称模糊搜索。{@common.range}",
    "drilldown.agent.title": "智能体消耗明细 (Token)",
    "drilldown.agent.description":
        "{@common.caller}当前租户成员在筛选时间内使用的所有智能体（包括其他租户拥有的智能体）："
        "Token总消耗（输入 + 输出）、输入Token、输出Token；创建时间和创建人来自目录（创建人显示为"
        "其在智能体所属租户中的名称；目录中没有的智能体显示其ID，没有创建人）。智能体的Token包括其"
        "自身调用以及其对话工作流、调用的工作流和工具。{@drilldown.search_note}"
        "按智能体名称或ID模糊搜索。{@common.range}",
    "drilldown.workflow.title": "工作流消耗明细 (Token)",
    "drilldown.workflow.description":
        "{@common.caller}当前租户成员在筛选时间内运行的所有工作流（按最外层工作流计；智能体的"
        "对话工作流不会出现）：Token总消耗（输入 + 输出）、输入Token、输出Token；创建时间和创建人"
        "来自目录（创建人显示为其在工作流所属租户中的名称）。{@drilldown.search_note}"
        "按工作流名称或ID模糊搜索。{@common.range}",
    "drilldown.member.title": "成员Token消耗排行",
    "drilldown.member.description":
        "{@common.caller}当前租户中在筛选时间内有Token消耗的所有成员，按Token总消耗（输入 + 输出）"
        "降序排列。{@drilldown.search_note}按成员名称、邮箱、mis、手机号（联系方式需导出器开启导出）"
        "或ID模糊搜索；排行仍是该成员在全部成员中的位置。{@common.range}",
    # -- §4 SRE ------------------------------------------------------------------------------
    "sre.title": "LLM Token：用量与成本治理",
    "sre.description": "平台SRE视图：今日和本月用量、预算、月末预测、服务使用量、Token速率、"
                       "费用、Top租户和成员、错误、延迟、缓存以及归属健康度。日和月按各租户自己的"
                       "时区计算；时间轴为UTC。",
    "sre.today.title": "今日Token消耗",
    "sre.today.description": "所有租户今日的已归属Token（输入 + 输出），每个租户按其时区的日期"
                             "计算，精确值。{@common.period}",
    "sre.today_vs_yesterday.title": "今日较昨日",
    "sre.today_vs_yesterday.description":
        "今日截至目前的Token与昨日全天相比的变化（%）：(今日 − 昨日) / 昨日 × 100，所有租户，各按"
        "其时区。一天刚开始时必然为负（部分的一天对比完整的一天）：一天内的走势见「各模型Token速率」。"
        "{@common.no_data_yesterday}{@common.period}",
    "sre.month.title": "本月Token消耗",
    "sre.month.description": "所有租户本自然月的已归属Token（输入 + 输出），每个租户按其时区的月份"
                             "计算，精确值。{@common.period}",
    "sre.month_vs_last.title": "本月较上月",
    "sre.month_vs_last.description":
        "本月截至目前的Token与上月全月相比的变化（%）：(本月 − 上月) / 上月 × 100，所有租户，各按"
        "其时区。与数据保留时长无关（不做跨到上月的范围查询）。{@common.no_data_yesterday}"
        "{@common.period}",
    "sre.cost_hour.title": "近1小时费用",
    "sre.cost_hour.description": "所有租户的已归属Token在时间范围结束前1小时内的费用（美元，即当前"
                                 "每小时的费用），按价格目录计算的精确值；与时间范围的起点无关。"
                                 "不含「近1小时未定价Token」。",
    "sre.unpriced_hour.title": "近1小时未定价Token",
    "sre.unpriced_hour.description":
        "时间范围结束前1小时内价格目录中没有的模型的已归属Token（llm_unpriced_tokens_total），"
        "所有租户，精确值；与时间范围的起点无关。这些Token没有费用：大于0时「近1小时费用」并不完整。",
    "sre.cost_month.title": "本月费用",
    "sre.cost_month.description":
        "所有租户本月已归属Token的费用（美元，llm_period_cost_usd），每个租户按其时区的月份，"
        "精确值。没有价格的Token不产生费用：「本月未定价Token」大于0时本数字并不完整。"
        "{@common.period}",
    "sre.unpriced_month.title": "本月未定价Token",
    "sre.unpriced_month.description":
        "本月价格目录中没有的模型的已归属Token（llm_period_unpriced_tokens），所有租户，不计入"
        "任何费用。大于0时「本月费用」和月末预测并不完整：请把该模型加入价格目录（见「各模型未定价"
        "Token」）。{@common.period}",
    "sre.forecast_note": "本月费用 + 其近24小时的速率 × 距租户本月结束（llm_period_end_timestamp_"
                         "seconds，按其时区）剩余的秒数，与告警 MonthEndOverBudget 预测预算的方式"
                         "相同。仅为趋势，不是账单：每月第一天的近24小时部分属于上月。不含未定价"
                         "Token。",
    "sre.forecast.title": "月末费用预测",
    "sre.forecast.description": "按近一天的速度外推每个租户到其月末的费用，再求和："
                                "{@sre.forecast_note}{@common.period}",
    "sre.forecast_tenant.title": "各租户月末费用预测",
    "sre.forecast_tenant.description": "按近一天的速度外推每个租户到其月末的费用："
                                       "{@sre.forecast_note}{@common.period}",
    "sre.budget.title": "预算使用率",
    "sre.budget.description":
        "每个租户本月预算（预算文件中的租户预算）已使用的比例（%）：已用 / 限额，取Token和美元两者"
        "中较大的一个；已用量对所有导出器求和，限额只取一次，与预算告警的计算方式相同。颜色从50%、"
        "80%、100%起变化（默认阈值：警告、限流、耗尽；整个面板一套颜色，设置了自有阈值的租户按其"
        "自有阈值告警）。进度条在100%时填满，超出部分显示在数值中。没有预算的租户不列出；成员和"
        "智能体预算见 GET /v1/budgets/<tenant>。{@common.period}",
    "sre.rate.title": "各模型Token速率",
    "sre.rate.description": "各模型每秒的已归属Token（输入 + 输出），所有租户：$__rate_interval "
                            "上的 rate。不含未归属Token（见归属健康度面板）。",
    "sre.rate.axis": "Token/秒",
    "sre.cost_share.title": "各模型费用占比",
    "sre.cost_share.description": "所选时间范围内各模型在所有租户已归属Token费用（美元）中的占比，"
                                  "精确值。未定价的模型没有费用，不会出现。{@common.range}",
    "sre.services.title": "服务使用量",
    "sre.services.description":
        "所选时间范围内所有租户成员在各服务上的Token（输入 + 输出）和模型调用次数，精确值"
        "（llm_service_tokens_total、llm_service_calls_total）。服务取调用最近的外层组件：agent"
        "（智能体）、assistant（目录中标为助手的智能体）、workflow（工作流）、tool（工具，即算子调用）"
        "或 direct（不在任何组件内）。每个已归属的调用只属于一个服务：各行之和等于全部已归属的Token"
        "和调用次数。时间范围内没有调用的服务显示0；从未使用过的服务没有这一行。{@common.range}",
    "sre.top_tenants.title": "Top 10 租户",
    "sre.top_tenants.description": "所选时间范围内成员消耗已归属Token（输入 + 输出）最多的10个"
                                   "租户，精确值。",
    "sre.top_members.title": "Top 10 成员",
    "sre.top_members.description": "所选时间范围内消耗已归属Token（输入 + 输出）最多的10个成员"
                                   "（任意租户），精确值；属于多个租户的成员每个租户一行。",
    "sre.errors.title": "各模型错误率",
    "sre.errors.description": "所选时间范围内各模型结果为错误（span 状态为 ERROR 或带 error.type）"
                              "的调用占比，所有租户：错误数 / 调用数 × 100。",
    "sre.quantile_note": "Prometheus 在桶内按线性插值（桶边界：50 ms、100 ms、250 ms、500 ms、"
                         "1 s、2.5 s、5 s、10 s、20 s、30 s、60 s、120 s、300 s）：百分位数只精确"
                         "到所在的桶，超过 300 s 的显示为 300 s。窗口内没有调用的模型没有数据点。",
    "sre.latency.title": "各模型调用延迟 (p50/p95/p99)",
    "sre.latency.description":
        "各模型调用的耗时（模型调用 span 从开始到结束），所有租户：$__rate_interval 上的第50、"
        "95、99百分位数，来自直方图 llm_model_call_duration_seconds（已归属的调用，即租户成员的"
        "调用）。{@sre.quantile_note}",
    "sre.ttft.title": "各模型首Token时间 (p50/p95)",
    "sre.ttft.description":
        "各模型从发出请求到收到第一个流式Token的时间，所有租户：$__rate_interval 上的第50、95"
        "百分位数，来自直方图 llm_model_time_to_first_token_seconds。只统计 span 上报了该值的"
        "流式调用（gen_ai.server.time_to_first_token 或等价属性）：不用流式调用的模型没有曲线。"
        "{@sre.quantile_note}",
    "sre.cache.title": "各模型缓存读取占比",
    "sre.cache.description": "所选时间范围内各模型的输入Token中读取自服务商提示缓存的占比，所有"
                             "租户：缓存读取Token / 输入Token × 100（缓存Token是输入的一部分）。",
    "sre.unattributed.title": "未归属Token（按原因）",
    "sre.unattributed.description": "所选时间范围内未计入任何租户成本指标的Token，按原因："
                                    "no_caller（span 及其祖先上没有用户ID）、not_member（调用者"
                                    "不是该租户的成员）、ambiguous_tenant（未指定租户且调用者属于"
                                    "多个租户）；以及“未识别用量”：不是模型调用、其下也没有报告用量的"
                                    "模型调用的 span 上的Token，按 span 类型（unknown_kind、"
                                    "tool_span、workflow_span）。",
    "sre.unattributed.unclassified_legend": "未识别用量：{{reason}}",
    "sre.unpriced.title": "未定价Token（按模型）",
    "sre.unpriced.description": "所选时间范围内价格目录中没有的模型的已归属Token：它们没有费用。"
                                "请把该模型加入价格目录。",
    "sre.rejected.title": "被拒绝的Span（按原因）",
    "sre.rejected.description": "所选时间范围内导出器拒绝的Span（计数后跳过，从不归属），按原因。",
    "sre.unattributed_share.title": "未归属占比",
    "sre.unattributed_share.description": "所选时间范围内未归属Token / (已归属 + 未归属Token) × "
                                          "100。上升说明目录过期，或埋点缺少用户或租户ID。",
    "sre.duplicates.title": "重复Span",
    "sre.duplicates.description": "所选时间范围内被再次投递（OTLP 客户端重试）且只计一次的Span。",
    "sre.pending.title": "待处理Trace",
    "sre.pending.description": "当前仍在等待其祖先Span的Trace数，所有导出器之和。",
    "sre.directory_age.title": "目录数据时效",
    "sre.directory_age.description": "距目录（成员和资产）上次成功加载的时间，当前值；取所有导出器"
                                     "中最久的。目录过期会使新成员和新资产归属错误。",
}
