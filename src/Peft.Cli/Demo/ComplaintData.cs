namespace Peft.Cli.Demo;

/// <summary>
/// A small labelled set in the spirit of the twitter_complaints task PEFT's examples use: short customer messages,
/// 1 = complaint, 0 = no complaint (alternating). Written for this project. The eval split takes positions 3 and 6
/// of every eight — one odd, one even — so it holds both classes equally.
/// </summary>
internal static class ComplaintData
{
    public static readonly (string Text, int Label)[] All =
    [
        ("my order arrived broken and nobody answers the phone", 1),
        ("thanks for the quick delivery, everything works great", 0),
        ("still waiting for my refund after three weeks", 1),
        ("love the new app update, very easy to use", 0),
        ("the package was late again and the box was damaged", 1),
        ("great service today, the staff was really friendly", 0),
        ("charged twice for the same order, please fix this", 1),
        ("just wanted to say the support team was helpful", 0),
        ("the app keeps crashing when i try to pay", 1),
        ("happy with my purchase, would buy again", 0),
        ("worst customer service ever, i want my money back", 1),
        ("the delivery was fast and the product looks great", 0),
        ("my account was locked and support never replied", 1),
        ("thank you for fixing my problem so quickly", 0),
        ("the item is missing parts and the manual is wrong", 1),
        ("really enjoying the product, works as described", 0),
        ("terrible experience, the driver left my parcel in the rain", 1),
        ("nice packaging and a friendly note, thanks", 0),
        ("i was promised a callback that never happened", 1),
        ("the new store is clean and the staff helpful", 0),
        ("wrong size delivered and the return label is broken", 1),
        ("fast shipping, everything arrived in perfect condition", 0),
        ("the website lost my order and charged my card", 1),
        ("the support chat solved my question in minutes", 0),
        ("cancelled my flight without any notice, unacceptable", 1),
        ("great price and the quality is excellent", 0),
        ("my internet has been down for two days, no help", 1),
        ("thanks for the discount code, very kind", 0),
        ("the refund was rejected for no reason", 1),
        ("the app update made everything faster, well done", 0),
        ("delivery was late and the food was cold", 1),
        ("the team went above and beyond, thank you", 0),
        ("i got a damaged phone and support keeps ignoring me", 1),
        ("my order came early, what a nice surprise", 0),
        ("the bill is wrong again, this is the third time", 1),
        ("friendly driver and the parcel was on time", 0),
        ("nobody answers my emails about the broken heater", 1),
        ("excellent quality, the product works great", 0),
        ("the store charged me more than the price on the shelf", 1),
        ("quick answer from support, problem solved", 0),
        ("the replacement is also broken, i want a refund", 1),
        ("very happy with the service, thanks a lot", 0),
        ("my subscription renewed without asking, please cancel", 1),
        ("the new menu is delicious, great job", 0),
        ("two hours on hold and the call was dropped", 1),
        ("the installation was easy and everything works", 0),
        ("the parcel was stolen because the driver left it outside", 1),
        ("thank you for the friendly help at the store", 0),
        ("the screen stopped working after one day", 1),
        ("fast refund, thanks for the easy return", 0),
        ("i was charged a fee that nobody told me about", 1),
        ("the delivery team was polite and on time", 0),
        ("the app logs me out every time, very annoying", 1),
        ("great experience, the order was perfect", 0),
        ("my package is lost and tracking has not changed in days", 1),
        ("the product quality is great for the price", 0),
        ("support closed my ticket without fixing the problem", 1),
        ("thanks for the quick reply and the help", 0),
        ("the room was dirty and the staff was rude", 1),
        ("lovely stay, the staff was friendly and helpful", 0),
        ("my order was cancelled and the refund never came", 1),
        ("works great, thanks for the fast delivery", 0),
        ("the charger is broken and the store refuses a return", 1),
        ("the support team was kind and solved everything", 0),
    ];

    private static bool IsEval(int i) => i % 8 is 3 or 6;

    public static IEnumerable<(string Text, int Label)> Train => All.Where((_, i) => !IsEval(i));

    public static IEnumerable<(string Text, int Label)> Eval => All.Where((_, i) => IsEval(i));
}
